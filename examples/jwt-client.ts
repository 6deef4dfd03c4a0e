/**
 * An HTTP client that authenticates with a JWT-SVID: it fetches one for the server's audience from the Workload API
 * and sends it as `Authorization: Bearer`.
 *
 *   node dist/examples/jwt-client.js --audience spiffe://example.org/jwt-server [--url http://127.0.0.1:8080/]
 *     [--spiffe-id spiffe://example.org/client] [--address unix:///tmp/sigil-agent/public/api.sock]
 */
import { WorkloadApiClient } from '@sigil/workload-api';
import { fail, flags } from './example-args.js';

const usage = 'jwt-client --audience AUDIENCE [--url URL] [--spiffe-id SPIFFE_ID] [--address URI]';
const args = flags(usage, { audience: undefined, url: 'http://127.0.0.1:8080/', 'spiffe-id': undefined }, [
  'audience',
  'url',
]);

const client = new WorkloadApiClient({ address: args.address });
try {
  const svid = await client.fetchJwtSvid({ audience: args.audience, spiffeId: args['spiffe-id'] });
  console.log(`calling ${args.url} as ${svid.spiffeId.toString()}`);
  const response = await fetch(args.url, { headers: { authorization: `Bearer ${svid.token}` } });
  console.log(`${response.status}: ${(await response.text()).trim()}`);
} catch (error) {
  fail(`failed: ${(error as Error).message}`);
} finally {
  await client.close();
}
