import { ATTESTATION_PATH_PREFIX } from '@sigil/agent-api';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type ApiName, type AttestationOutcome, type MetricsService } from './metrics.service.js';

function apiOf(route: string): ApiName {
  if (route.startsWith('/agent/')) return 'agent';
  if (route.startsWith('/v1/')) return 'admin';
  return 'public';
}

function attestationOutcome(code: number): AttestationOutcome {
  if (code < 300) return 'ok';
  if (code === 401 || code === 403) return 'refused';
  if (code === 429) return 'rate_limited';
  if (code === 503) return 'unavailable';
  if (code < 500) return 'invalid';
  return 'error';
}

/**
 * Counts every answered request by its route template (so label values are bounded by the routes the app serves,
 * whatever URLs callers send: an unknown path counts as `unmatched`), and each node attestation by method and
 * outcome. The method is the type of the enabled attestor at the route's segment; any other segment counts as
 * `unknown`.
 */
export function countHttpResponses(
  fastify: FastifyInstance,
  metrics: MetricsService,
  attestorTypeAt: (segment: string) => string | undefined,
): void {
  const attestRoute = `${ATTESTATION_PATH_PREFIX}/:attestor`;
  fastify.addHook('onResponse', (request: FastifyRequest, reply: FastifyReply, done) => {
    const route = (request.routeOptions.url as string | undefined) ?? 'unmatched';
    const code = reply.statusCode;
    metrics.httpRequest(apiOf(route), route, request.method, code);
    if (route === attestRoute && request.method === 'POST') {
      const segment = (request.params as { attestor?: unknown } | undefined)?.attestor;
      // Only an enabled attestor's type: the segment itself is the caller's to choose (a 429 comes before any lookup).
      const method = (typeof segment === 'string' ? attestorTypeAt(segment) : undefined) ?? 'unknown';
      metrics.nodeAttestation(method, attestationOutcome(code));
    }
    done();
  });
}
