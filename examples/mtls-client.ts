/**
 * An HTTPS client with mutual SPIFFE authentication: it presents its X.509-SVID from the Workload API and talks
 * only to the server SPIFFE ID given by --authorize (host names are not checked). With --every it keeps calling,
 * each time on a new connection, so SVID rotations on either side can be watched.
 *
 *   node dist/examples/mtls-client.js --authorize spiffe://example.org/server [--spiffe-id spiffe://example.org/client]
 *     [--url https://127.0.0.1:8443/] [--every SECONDS] [--address unix:///tmp/sigil-agent/public/api.sock]
 */
import { request } from 'node:https';
import { type TLSSocket } from 'node:tls';
import { authorizeId, createClientTlsOptions } from '@sigil/workload-api';
import { fail, flags, openX509Source } from './example-args.js';

const usage = 'mtls-client --authorize SPIFFE_ID [--spiffe-id SPIFFE_ID] [--url URL] [--every SECONDS] [--address URI]';
const args = flags(
  usage,
  { authorize: undefined, 'spiffe-id': undefined, url: 'https://127.0.0.1:8443/', every: undefined },
  ['authorize', 'url'],
);

const source = await openX509Source(args.address, args['spiffe-id']);
const tlsOptions = createClientTlsOptions(source, authorizeId(args.authorize));

function call(): Promise<void> {
  return new Promise((resolve, reject) => {
    // agent: false: a new connection (and handshake) per call.
    const req = request(args.url, { ...tlsOptions, agent: false }, (res) => {
      const serial = (res.socket as TLSSocket).getPeerCertificate().serialNumber;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        console.log(`${res.statusCode} from server certificate ${serial}: ${body.trim()}`);
        resolve();
      });
    });
    req.on('error', reject);
    req.end();
  });
}

if (args.every === undefined) {
  await call().catch((error: Error) => fail(`request failed: ${error.message}`));
  await source.close();
} else {
  const timer = setInterval(
    () => void call().catch((error: Error) => console.error(`request failed: ${error.message}`)),
    Number(args.every) * 1000,
  );
  await call().catch((error: Error) => console.error(`request failed: ${error.message}`));
  process.once('SIGINT', () => {
    clearInterval(timer);
    void source.close();
  });
}
