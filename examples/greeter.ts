/**
 * The gRPC service of the gRPC examples, `sigil.example.Greeter/Hello(StringValue) returns (StringValue)`, described
 * in code (no .proto to generate) so that the examples need nothing but the packages they import.
 */
import { create, createFileRegistry } from '@bufbuild/protobuf';
import { type GenService } from '@bufbuild/protobuf/codegenv2';
import {
  FileDescriptorProtoSchema,
  type StringValueSchema,
  file_google_protobuf_wrappers,
} from '@bufbuild/protobuf/wkt';

const file = create(FileDescriptorProtoSchema, {
  name: 'sigil/example/greeter.proto',
  package: 'sigil.example',
  syntax: 'proto3',
  dependency: ['google/protobuf/wrappers.proto'],
  service: [
    {
      name: 'Greeter',
      method: [
        { name: 'Hello', inputType: '.google.protobuf.StringValue', outputType: '.google.protobuf.StringValue' },
      ],
    },
  ],
});

/** The `sigil.example.Greeter` service, typed as protoc-gen-es would type it. */
export const Greeter = createFileRegistry(file, (name) =>
  name === file_google_protobuf_wrappers.proto.name ? file_google_protobuf_wrappers : undefined,
).getService('sigil.example.Greeter') as GenService<{
  hello: { methodKind: 'unary'; input: typeof StringValueSchema; output: typeof StringValueSchema };
}>;

/** The method's path on the wire. */
export const HELLO_PATH = '/sigil.example.Greeter/Hello';
