import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { countHttpResponses } from './http-metrics.js';
import { MetricsService } from './metrics.service.js';

/** A real Fastify instance with routes shaped like the server's, counted by the hook under test. */
async function app(): Promise<{ fastify: ReturnType<typeof Fastify>; metrics: MetricsService }> {
  const fastify = Fastify();
  const metrics = new MetricsService();
  countHttpResponses(fastify, metrics, (segment) => (segment === 'join-token' ? 'join_token' : undefined));
  fastify.post('/agent/v1/attest/:attestor', async (request, reply) => {
    const { attestor } = request.params as { attestor: string };
    if (attestor !== 'join-token') return reply.code(404).send({ error: 'not_found' });
    const { token } = request.body as { token: string };
    return token === 'good' ? { ok: true } : reply.code(403).send({ error: 'permission_denied' });
  });
  fastify.get('/v1/entries/:id', async () => ({}));
  fastify.get('/agent/v1/sync', async (_request, reply) => reply.code(429).send({ error: 'resource_exhausted' }));
  await fastify.ready();
  return { fastify, metrics };
}

describe('countHttpResponses', () => {
  it('counts by API, route template, method and code; 429s as rate-limited', async () => {
    const { fastify, metrics } = await app();
    await fastify.inject({ method: 'GET', url: '/v1/entries/abc' });
    await fastify.inject({ method: 'GET', url: '/v1/entries/def?x=1' });
    await fastify.inject({ method: 'GET', url: '/agent/v1/sync' });
    await fastify.inject({ method: 'GET', url: '/no/such/path/1' });
    await fastify.inject({ method: 'GET', url: '/no/such/path/2' });
    const text = await metrics.render();
    expect(text).toContain(
      'sigil_http_requests_total{api="admin",route="/v1/entries/:id",method="GET",code="200"} 2\n',
    );
    expect(text).toContain('sigil_http_requests_total{api="agent",route="/agent/v1/sync",method="GET",code="429"} 1\n');
    expect(text).toContain('sigil_http_requests_total{api="public",route="unmatched",method="GET",code="404"} 2\n');
    expect(text).toContain('sigil_rate_limited_requests_total{api="agent",route="/agent/v1/sync"} 1\n');
    expect(text).not.toContain('abc');
    expect(text).not.toContain('/no/such');
  });

  it('counts attestations by the enabled attestor type and outcome; a segment no attestor serves is "unknown"', async () => {
    const { fastify, metrics } = await app();
    const attest = (segment: string, token: string) =>
      fastify.inject({ method: 'POST', url: `/agent/v1/attest/${segment}`, payload: { token } });
    await attest('join-token', 'good');
    await attest('join-token', 'bad');
    await attest('join-token', 'bad');
    // A caller picks any segment: none may become a label value (unbounded series), only "unknown".
    for (let i = 0; i < 5; i++) await attest(`made-up-${i}`, 'good');
    const text = await metrics.render();
    expect(text).toContain('sigil_node_attestations_total{method="join_token",outcome="ok"} 1\n');
    expect(text).toContain('sigil_node_attestations_total{method="join_token",outcome="refused"} 2\n');
    expect(text).toContain('sigil_node_attestations_total{method="unknown",outcome="invalid"} 5\n');
    expect(text).not.toContain('made-up');
  });
});
