/**
 * The routes of the agent API on the server's TLS port. The attestation routes are open (the join token or the
 * x509pop proof is the credential); the others take the agent's X509-SVID over mTLS.
 */

/** Every route lives under this prefix (a new major version would get a new one). */
export const AGENT_API_PREFIX = '/agent/v1';

/** One route: its method and its full path (the query, if any, is added by the caller). */
export interface AgentApiRoute {
  readonly method: 'GET' | 'POST';
  readonly path: string;
}

/** Every route of the agent API, by what it does. */
export const AGENT_API_ROUTES = {
  attestJoinToken: { method: 'POST', path: '/agent/v1/attest/join-token' },
  x509popChallenge: { method: 'POST', path: '/agent/v1/attest/x509pop/challenge' },
  attestX509pop: { method: 'POST', path: '/agent/v1/attest/x509pop' },
  renew: { method: 'POST', path: '/agent/v1/renew' },
  /** Long poll: the query is {@link SyncQuery}, see `syncPath`. */
  sync: { method: 'GET', path: '/agent/v1/sync' },
  signX509Svids: { method: 'POST', path: '/agent/v1/svids/x509' },
  signJwtSvid: { method: 'POST', path: '/agent/v1/svids/jwt' },
} as const satisfies Record<string, AgentApiRoute>;

/**
 * A route's path relative to `prefix`, for a router that nests routes under a controller prefix
 * (`routePath(AGENT_API_ROUTES.renew)` is `renew`).
 */
export function routePath(route: AgentApiRoute, prefix: string = AGENT_API_PREFIX): string {
  if (!route.path.startsWith(`${prefix}/`)) throw new Error(`route ${route.path} is not under ${prefix}`);
  return route.path.slice(prefix.length + 1);
}
