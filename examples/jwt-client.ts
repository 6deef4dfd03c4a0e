/**
 * An HTTP client that authenticates with a JWT-SVID: it fetches one for the server's audience from the Workload API
 * and sends it as `Authorization: Bearer`. For an `https:` URL it uses one-way TLS (`createTlsClientOptions`): it
 * presents no certificate, but talks only to the server SPIFFE ID given by --authorize, verified with the X.509
 * bundle in the PEM file --bundle (`sigil-server bundle show --format pem`).
 *
 *   node dist/examples/jwt-client.js --audience spiffe://example.org/jwt-server [--url http://127.0.0.1:8080/]
 *     [--authorize spiffe://example.org/server --bundle bundle.pem] [--spiffe-id spiffe://example.org/client]
 *     [--address unix:///tmp/sigil-agent/public/api.sock]
 */
import { request } from 'node:https';
import { SpiffeId, WorkloadApiClient, authorizeId, createTlsClientOptions, loadX509Bundle } from '@sigil/workload-api';
import { fail, flags } from './example-args.js';

const usage =
  'jwt-client --audience AUDIENCE [--url URL] [--authorize SPIFFE_ID --bundle FILE] [--spiffe-id SPIFFE_ID] [--address URI]';
const args = flags(
  usage,
  {
    audience: undefined,
    url: 'http://127.0.0.1:8080/',
    'spiffe-id': undefined,
    authorize: undefined,
    bundle: undefined,
  },
  ['audience', 'url'],
);

/** GET over one-way TLS: the server must be `authorize`'s X.509-SVID, verified with the bundle file. */
async function getOverTls(url: string, authorization: string, authorize: string, bundleFile: string) {
  const serverId = SpiffeId.parse(authorize);
  const bundle = await loadX509Bundle(serverId.trustDomain, bundleFile);
  const tlsOptions = createTlsClientOptions(bundle, authorizeId(serverId));
  return new Promise<{ status: number; text: () => Promise<string> }>((resolve, reject) => {
    const req = request(url, { ...tlsOptions, headers: { authorization }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, text: async () => body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const client = new WorkloadApiClient({ address: args.address });
try {
  const svid = await client.fetchJwtSvid({ audience: args.audience, spiffeId: args['spiffe-id'] });
  console.log(`calling ${args.url} as ${svid.spiffeId.toString()}`);
  const authorization = `Bearer ${svid.token}`;
  let response: { status: number; text: () => Promise<string> };
  if (new URL(args.url).protocol === 'https:') {
    if (args.authorize === undefined || args.bundle === undefined)
      fail(`https needs --authorize and --bundle\nusage: ${usage}`);
    response = await getOverTls(args.url, authorization, args.authorize, args.bundle);
  } else {
    response = await fetch(args.url, { headers: { authorization } });
  }
  console.log(`${response.status}: ${(await response.text()).trim()}`);
} catch (error) {
  fail(`failed: ${(error as Error).message}`);
} finally {
  await client.close();
}
