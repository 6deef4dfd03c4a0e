/**
 * Observability end to end: a real server with `--metrics-address` and a real agent with `--metrics-address` and
 * `--health-address`. Each /metrics answer is checked with Prometheus's own linter (`promtool check metrics`, Debian
 * package `prometheus`), then for the metrics operators alert on; the agent's probes answer as a Kubernetes probe
 * reads them.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ServerProcess,
  type SigilProcess,
  agentReady,
  closeTestDatabase,
  requireBuild,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';
import { firstMessage, securityHeader, workloadClient, type WorkloadClient } from '../support/workload-grpc.js';

const PROMTOOL = (() => {
  try {
    return execFileSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
})();

/** `promtool check metrics` on `text`: its exit code and what it printed (lint problems, one per line). */
function promtoolCheck(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL as string, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
    child.stdin.end(text);
  });
}

async function get(url: string): Promise<{ status: number; type: string; body: string }> {
  const response = await fetch(url);
  return { status: response.status, type: response.headers.get('content-type') ?? '', body: await response.text() };
}

/** GET on the server's TLS port (its certificate is our own CA's; only the status matters here). */
function getTls(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const call = httpsRequest({ host: '127.0.0.1', port, path, rejectUnauthorized: false }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    call.once('error', reject);
    call.end();
  });
}

/** The value of the sample `series` (name and labels exactly as exposed), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((each) => each.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function waitUntil(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 100));
  }
}

describe('metrics and health endpoints of a real server and agent', () => {
  let scratch: string;
  let server: ServerProcess;
  let agent: SigilProcess;
  let serverMetrics: string;
  let agentMetrics: string;
  let agentHealth: string;
  let client: WorkloadClient;

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-obs-'));
    server = await startServerProcess({ dir: scratch, flags: ['--metrics-address', '127.0.0.1:0'] });
    serverMetrics = `http://${(await server.process.waitFor(/"metricsAddress":"([\d.:]+)"/))[1]}`;
    const bundle = join(scratch, 'bundle.pem');
    await server.writeBundle(bundle);
    const uid = process.getuid!();
    const node = 'spiffe://example.org/host/obs';
    await server.json([
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://example.org/obs',
      '--parent-id',
      node,
      '--selector',
      `unix:uid:${uid}`,
    ]);
    agent = startAgentProcess({
      servers: [server.port],
      socketPath: join(scratch, 'agent', 'api.sock'),
      dataDir: join(scratch, 'agent-data'),
      trustBundle: bundle,
      joinToken: await server.joinToken(node),
      flags: [
        '--metrics-address',
        '127.0.0.1:0',
        '--health-address',
        '127.0.0.1:0',
        '--health-ready-max-sync-age',
        '2s',
      ],
    });
    await agentReady(agent);
    const running = await agent.waitFor(/"metricsAddress":"([\d.:]+)","healthAddress":"([\d.:]+)"/);
    agentMetrics = `http://${running[1]}`;
    agentHealth = `http://${running[2]}`;
    client = workloadClient(join(scratch, 'agent', 'api.sock'));
  }, 120_000);

  afterAll(async () => {
    client?.close();
    await agent?.stop();
    await server?.process.stop();
    await closeTestDatabase();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it.skipIf(PROMTOOL === undefined)(
    'server /metrics passes promtool check metrics (skipped without promtool: apt-get install prometheus)',
    async () => {
      const { status, body } = await get(`${serverMetrics}/metrics`);
      expect(status).toBe(200);
      expect(await promtoolCheck(body)).toEqual({ code: 0, output: '' });
    },
  );

  it.skipIf(PROMTOOL === undefined)(
    'agent /metrics passes promtool check metrics (skipped without promtool: apt-get install prometheus)',
    async () => {
      const { status, body } = await get(`${agentMetrics}/metrics`);
      expect(status).toBe(200);
      expect(await promtoolCheck(body)).toEqual({ code: 0, output: '' });
    },
  );

  it('serves the server metrics operators alert on, and /metrics and /docs only on the metrics address', async () => {
    const { body } = await get(`${serverMetrics}/metrics`);
    const now = Date.now() / 1000;
    const caExpiry = sample(body, 'sigil_authority_expiry_timestamp_seconds{kind="x509",state="active"}');
    const jwtExpiry = sample(body, 'sigil_authority_expiry_timestamp_seconds{kind="jwt",state="active"}');
    expect(caExpiry).toBeGreaterThan(now);
    expect(caExpiry).toBeLessThanOrEqual(now + 24 * 3600 + 60);
    expect(jwtExpiry).toBeGreaterThan(now);
    expect(body).toMatch(/^sigil_build_info\{version="0\.1\.0",node_version="v[\d.]+"\} 1$/m);
    expect(sample(body, 'sigil_node_attestations_total{method="join_token",outcome="ok"}')).toBe(1);
    expect(body).toMatch(
      /^sigil_http_requests_total\{api="agent",route="\/agent\/v1\/sync",method="GET",code="200"\} \d+$/m,
    );
    expect(body).toMatch(/^sigil_entries \d+$/m);
    expect(body).toMatch(/^sigil_tls_connections_refused_total\{reason="max_connections"\} 0$/m);

    expect((await get(`${serverMetrics}/docs/json`)).status).toBe(200);
    expect(await get(`${serverMetrics}/v1/entries`)).toMatchObject({ status: 404 });
    expect(await getTls(server.port, '/metrics')).toBe(404);
    expect(await getTls(server.port, '/docs/json')).toBe(404);
    expect(await getTls(server.port, '/healthz')).toBe(200);
  });

  it('counts the agent: attestation, syncs, cache sizes, Workload API calls by RPC and code', async () => {
    // One call refused by the security header, one answered.
    await expect(firstMessage(client.FetchX509SVID({}, securityHeader(false)))).rejects.toMatchObject({ code: 3 });
    await firstMessage(client.FetchX509SVID({}, securityHeader()));
    let body = '';
    await waitUntil(async () => {
      body = (await get(`${agentMetrics}/metrics`)).body;
      return sample(body, 'sigil_agent_workload_api_calls_total{rpc="FetchX509SVID",code="CANCELLED"}') === 1;
    }, 'the cancelled stream to be counted');
    expect(sample(body, 'sigil_agent_workload_api_calls_total{rpc="FetchX509SVID",code="INVALID_ARGUMENT"}')).toBe(1);
    expect(sample(body, 'sigil_agent_node_attestations_total{method="join_token",outcome="ok"}')).toBe(1);
    expect(sample(body, 'sigil_agent_syncs_total{outcome="ok"}')).toBeGreaterThanOrEqual(1);
    // The workload's entry and the node alias entry the join token made: both cached, both signed once.
    expect(sample(body, 'sigil_agent_cached_entries')).toBe(2);
    expect(sample(body, 'sigil_agent_cached_x509_svids')).toBe(2);
    expect(sample(body, 'sigil_agent_svid_rotations_total{outcome="signed"}')).toBe(2);
    expect(sample(body, 'sigil_agent_sync_age_seconds')).toBeLessThan(30);
    expect(sample(body, 'sigil_agent_last_sync_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 60);
  });

  it('answers /live and /ready, and /ready turns 503 naming the stale sync while the server is down', async () => {
    expect(await get(`${agentHealth}/live`)).toMatchObject({ status: 200, body: '{"sync_loop":"ok","agent":"ok"}' });
    await waitUntil(async () => (await get(`${agentHealth}/ready`)).status === 200, 'the agent to be ready');
    expect(JSON.parse((await get(`${agentHealth}/ready`)).body)).toEqual({
      attested: 'ok',
      sync: 'ok',
      workload_api: 'ok',
    });
    expect((await get(`${agentHealth}/metrics`)).status).toBe(404);

    await server.process.stop();
    let ready = { status: 0, type: '', body: '' };
    await waitUntil(async () => {
      ready = await get(`${agentHealth}/ready`);
      return ready.status === 503;
    }, '/ready to fail');
    expect(JSON.parse(ready.body)).toMatchObject({
      attested: 'ok',
      sync: expect.stringMatching(/^last entry sync \d+s ago \(over 2s\)$/),
      workload_api: 'ok',
    });
    expect((await get(`${agentHealth}/live`)).status).toBe(200);
    await waitUntil(
      async () =>
        (sample((await get(`${agentMetrics}/metrics`)).body, 'sigil_agent_syncs_total{outcome="failed"}') ?? 0) >= 1,
      'a failed sync to be counted',
    );
  }, 60_000);
});
