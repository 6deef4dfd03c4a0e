/**
 * A gRPC client with mutual SPIFFE authentication, twice: with @grpc/grpc-js and `createGrpcChannelCredentials`
 * (from `@sigil/workload-api/grpc-js`), then with a Connect client over `createMtlsGrpcTransport`. Both present the
 * workload's X.509-SVID and talk only to the server SPIFFE ID given by --authorize.
 *
 *   node dist/examples/grpc-client.js --authorize spiffe://example.org/server [--spiffe-id spiffe://example.org/client]
 *     [--target 127.0.0.1:8444] [--name world] [--address unix:///tmp/sigil-agent/public/api.sock]
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { StringValueSchema } from '@bufbuild/protobuf/wkt';
import { createClient } from '@connectrpc/connect';
import { Client, type ServiceError } from '@grpc/grpc-js';
import { authorizeId, createMtlsGrpcTransport } from '@sigil/workload-api';
import { createGrpcChannelCredentials } from '@sigil/workload-api/grpc-js';
import { fail, flags, openX509Source } from './example-args.js';
import { Greeter, HELLO_PATH } from './greeter.js';

const usage =
  'grpc-client --authorize SPIFFE_ID [--spiffe-id SPIFFE_ID] [--target HOST:PORT] [--name NAME] [--address URI]';
const args = flags(usage, { authorize: undefined, 'spiffe-id': undefined, target: '127.0.0.1:8444', name: 'world' }, [
  'authorize',
  'target',
  'name',
]);

const source = await openX509Source(args.address, args['spiffe-id']);
const authorizer = authorizeId(args.authorize);

const grpcClient = new Client(args.target, createGrpcChannelCredentials(source, authorizer));
try {
  const answer = await new Promise<string>((resolve, reject) =>
    grpcClient.makeUnaryRequest(
      HELLO_PATH,
      (value: string) => Buffer.from(toBinary(StringValueSchema, create(StringValueSchema, { value }))),
      (bytes: Buffer) => fromBinary(StringValueSchema, bytes).value,
      args.name,
      (error: ServiceError | null, value?: string) => (error ? reject(error) : resolve(value!)),
    ),
  );
  console.log(`grpc-js: ${answer}`);
  const connectClient = createClient(
    Greeter,
    createMtlsGrpcTransport(source, authorizer, { baseUrl: `https://${args.target}` }),
  );
  console.log(`connect: ${(await connectClient.hello({ value: args.name })).value}`);
} catch (error) {
  fail(`call failed: ${(error as Error).message}`);
} finally {
  grpcClient.close();
  await source.close();
}
