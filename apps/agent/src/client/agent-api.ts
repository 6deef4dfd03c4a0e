import type { AgentSvidResponse, JwtSvidResponse, SyncQuery, SyncResponse, X509SignResult } from '@sigil/agent-api';

/**
 * What the SVID cache and the agent manager need from the server (the seam the tests fake). The messages, their
 * checks and the routes are the contract's, @sigil/agent-api; {@link ServerClient} carries them.
 */
export interface AgentApi {
  renew(csrPem: string): Promise<AgentSvidResponse>;
  sync(query: SyncQuery, signal?: AbortSignal): Promise<SyncResponse>;
  signX509Svids(csrs: readonly { entryId: string; csrPem: string }[]): Promise<X509SignResult[]>;
  signJwtSvid(entryId: string, audience: readonly string[]): Promise<JwtSvidResponse>;
}
