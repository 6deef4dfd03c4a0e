/**
 * The floor of `bench:workload -- --floor-rounds N`: a bare node:http2 server on a Unix socket that answers every
 * stream with one gRPC message and leaves the stream open, as the agent answers FetchX509SVID, with none of the
 * agent's work (no peer credentials, attestation, limits, connect-node or protobuf reflection). Its CPU per call is
 * what node:http2 itself costs for a new connection and one call on this machine.
 *
 * `node dist/bench/support/bare-grpc-server.js <socket> <spiffe-id> <bytes>`: the message is an X509SVIDResponse
 * holding one X509SVID with that SPIFFE ID and `bytes` bytes of certificate, so clients decode it like the real one.
 * Prints `listening` once ready.
 */
import { createServer } from 'node:http2';
import { BinaryWriter } from '@bufbuild/protobuf/wire';

const [socketPath, spiffeId, size] = process.argv.slice(2);
if (socketPath === undefined || spiffeId === undefined || !/^\d+$/.test(size ?? '')) {
  throw new Error('usage: bare-grpc-server.js <socket> <spiffe-id> <bytes>');
}
// X509SVIDResponse.svids (1) = X509SVID { spiffe_id (1), x509_svid (2) }, written field by field.
const inner = new BinaryWriter()
  .tag(1, 2)
  .string(spiffeId)
  .tag(2, 2)
  .bytes(new Uint8Array(Number(size)))
  .finish();
const message = new BinaryWriter().tag(1, 2).bytes(inner).finish();
const envelope = Buffer.alloc(5 + message.length);
envelope.writeUInt32BE(message.length, 1);
envelope.set(message, 5);

const server = createServer();
server.on('stream', (stream) => {
  stream.on('error', () => undefined);
  stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
  stream.resume();
  stream.write(envelope);
});
// The agent's backlog (workload-api.server.ts): Node's default of 511 refuses 1,000 clients connecting at once.
server.listen({ path: socketPath, backlog: 65_535 }, () => console.log('listening'));
