import { fileURLToPath } from 'node:url';
import { type DescMessage, ScalarType } from '@bufbuild/protobuf';
import * as protoLoader from '@grpc/proto-loader';
import { describe, expect, it } from 'vitest';
import {
  JWTBundlesResponseSchema,
  JWTSVIDRequestSchema,
  JWTSVIDResponseSchema,
  JWTSVIDSchema,
  SpiffeWorkloadAPI,
  ValidateJWTSVIDRequestSchema,
  ValidateJWTSVIDResponseSchema,
  X509BundlesResponseSchema,
  X509SVIDResponseSchema,
  X509SVIDSchema,
} from './index.js';

// The wire facts of the SPIFFE Workload API (the SPIFFE Workload API standard, github.com/spiffe/spiffe standards/SPIFFE_Workload_API.md; README, Workload API). Third-party clients
// (go-spiffe, py-spiffe, java-spiffe, Envoy) break silently if any of these drift, so they are listed by hand here
// rather than derived from the proto under test.
const RPCS = [
  ['FetchX509SVID', 'server_streaming', 'X509SVIDRequest', 'X509SVIDResponse'],
  ['FetchX509Bundles', 'server_streaming', 'X509BundlesRequest', 'X509BundlesResponse'],
  ['FetchJWTSVID', 'unary', 'JWTSVIDRequest', 'JWTSVIDResponse'],
  ['FetchJWTBundles', 'server_streaming', 'JWTBundlesRequest', 'JWTBundlesResponse'],
  ['ValidateJWTSVID', 'unary', 'ValidateJWTSVIDRequest', 'ValidateJWTSVIDResponse'],
] as const;

type FieldShape = [name: string, number: number, shape: string];

const FIELDS: [DescMessage, FieldShape[]][] = [
  [
    X509SVIDResponseSchema,
    [
      ['svids', 1, 'list:X509SVID'],
      ['crl', 2, 'list:bytes'],
      ['federated_bundles', 3, 'map:string->bytes'],
    ],
  ],
  [
    X509SVIDSchema,
    [
      ['spiffe_id', 1, 'string'],
      ['x509_svid', 2, 'bytes'],
      ['x509_svid_key', 3, 'bytes'],
      ['bundle', 4, 'bytes'],
      ['hint', 5, 'string'],
    ],
  ],
  [
    X509BundlesResponseSchema,
    [
      ['crl', 1, 'list:bytes'],
      ['bundles', 2, 'map:string->bytes'],
    ],
  ],
  [
    JWTSVIDRequestSchema,
    [
      ['audience', 1, 'list:string'],
      ['spiffe_id', 2, 'string'],
    ],
  ],
  [JWTSVIDResponseSchema, [['svids', 1, 'list:JWTSVID']]],
  [
    JWTSVIDSchema,
    [
      ['spiffe_id', 1, 'string'],
      ['svid', 2, 'string'],
      ['hint', 3, 'string'],
    ],
  ],
  [JWTBundlesResponseSchema, [['bundles', 1, 'map:string->bytes']]],
  [
    ValidateJWTSVIDRequestSchema,
    [
      ['audience', 1, 'string'],
      ['svid', 2, 'string'],
    ],
  ],
  [
    ValidateJWTSVIDResponseSchema,
    [
      ['spiffe_id', 1, 'string'],
      ['claims', 2, 'google.protobuf.Struct'],
    ],
  ],
];

function scalarName(scalar: ScalarType): string {
  return ScalarType[scalar].toLowerCase();
}

function describeField(message: DescMessage, name: string): string {
  const field = message.fields.find((f) => f.name === name);
  if (field === undefined) return 'missing';
  switch (field.fieldKind) {
    case 'scalar':
      return scalarName(field.scalar);
    case 'message':
      return field.message.typeName;
    case 'list':
      if (field.listKind === 'scalar') return `list:${scalarName(field.scalar)}`;
      return `list:${field.listKind === 'message' ? field.message.typeName : field.enum.typeName}`;
    case 'map':
      return `map:${scalarName(field.mapKey)}->${field.mapKind === 'scalar' ? scalarName(field.scalar) : field.mapKind}`;
    case 'enum':
      return `enum:${field.enum.typeName}`;
  }
}

describe('generated Workload API service', () => {
  it('is the package-less SpiffeWorkloadAPI service with exactly the five standard RPCs', () => {
    expect(SpiffeWorkloadAPI.typeName).toBe('SpiffeWorkloadAPI');
    expect(SpiffeWorkloadAPI.file.proto.package ?? '').toBe('');
    expect(SpiffeWorkloadAPI.methods.map((m) => m.name).sort()).toEqual(RPCS.map(([name]) => name).sort());
  });

  it.each(RPCS)('%s is %s from %s to %s', (name, kind, input, output) => {
    const method = SpiffeWorkloadAPI.methods.find((m) => m.name === name);
    expect(method?.methodKind).toBe(kind);
    expect(method?.input.typeName).toBe(input);
    expect(method?.output.typeName).toBe(output);
  });

  it.each(FIELDS.map(([message, fields]) => [message.typeName, message, fields] as const))(
    '%s has the standard field numbers and types',
    (_name, message, fields) => {
      for (const [name, number, shape] of fields) {
        expect({ name, number: message.fields.find((f) => f.name === name)?.number }).toEqual({ name, number });
        expect({ name, shape: describeField(message, name) }).toEqual({ name, shape });
      }
      expect(message.fields.length).toBe(fields.length);
    },
  );
});

describe('workload.proto as plain gRPC clients load it', () => {
  const protoPath = fileURLToPath(new URL('../proto/workload.proto', import.meta.url));
  const definition = protoLoader.loadSync(protoPath, { keepCase: true });

  it.each(RPCS)('%s is served at /SpiffeWorkloadAPI/%s with the right streaming flags', (name, kind) => {
    const service = definition['SpiffeWorkloadAPI'] as protoLoader.ServiceDefinition;
    const method = service[name];
    expect(method?.path).toBe(`/SpiffeWorkloadAPI/${name}`);
    expect(method?.requestStream).toBe(false);
    expect(method?.responseStream).toBe(kind === 'server_streaming');
  });

  it('declares no package: every message is at the top level', () => {
    for (const [, , input, output] of RPCS) {
      expect(definition[input]).toMatchObject({ format: 'Protocol Buffer 3 DescriptorProto' });
      expect(definition[output]).toMatchObject({ format: 'Protocol Buffer 3 DescriptorProto' });
    }
  });
});
