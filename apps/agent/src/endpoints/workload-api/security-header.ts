import { type IncomingHttpHeaders } from 'node:http2';
import { type DescService } from '@bufbuild/protobuf';
import { Code, ConnectError } from '@connectrpc/connect';
import { SpiffeWorkloadAPI } from '@sigil/workload-api/service';
import { type PeerCredentials } from '../peer-credentials.js';

/** The metadata every Workload API call must carry (SPIFFE Workload Endpoint §4, "Security Header"). */
export const SECURITY_HEADER = 'workload.spiffe.io';

/**
 * The check run once before every call on the agent's socket (SPIRE `middleware.go`); throws the refusal:
 *
 * 1. a Workload API call (`/SpiffeWorkloadAPI/…`) must carry exactly `workload.spiffe.io: true`, else
 *    `INVALID_ARGUMENT`: the header proves the request was made deliberately by a workload and not forwarded by a
 *    confused deputy such as an SSRF'd HTTP client. Envoy's SDS calls carry no such header and SPIRE asks none of
 *    them: only the Workload API's methods are checked;
 * 2. the caller's peer credentials must have been read from the kernel for this connection, else `INTERNAL` (the
 *    agent cannot identify the caller on this system, a condition no retry will fix).
 *
 * Header first, as SPIRE does, so a client without the header learns about that and nothing else; both before the
 * request message is read.
 */
export function checkSecurityHeader(
  service: DescService,
  headers: IncomingHttpHeaders,
  caller: PeerCredentials | undefined,
): void {
  // Node joins a repeated header's values with ", ", so a request with the header twice fails this check too, as in
  // SPIRE.
  if (service.typeName === SpiffeWorkloadAPI.typeName && headers[SECURITY_HEADER] !== 'true') {
    throw new ConnectError('security header missing from request', Code.InvalidArgument);
  }
  if (caller === undefined) {
    throw new ConnectError('caller peer credentials are unavailable on this connection', Code.Internal);
  }
}
