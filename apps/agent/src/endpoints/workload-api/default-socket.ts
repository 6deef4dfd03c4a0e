/**
 * Where the agent serves the Workload API unless told otherwise (README, Workload API; as SPIRE's default). Its own
 * module so that the `api` and `healthcheck` commands find it without loading the agent's server.
 */
export const DEFAULT_WORKLOAD_API_SOCKET = '/tmp/sigil-agent/public/api.sock';
