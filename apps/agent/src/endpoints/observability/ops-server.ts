import { createServer, type Server } from 'node:http';
import { type AddressInfo } from 'node:net';
import { type HostPort } from '@sigil/runtime';

/** One check of `/live` or `/ready`: undefined when it passes, else what is wrong. */
export type HealthCheck = () => string | undefined;

/** What one ops listener serves: `/metrics`, the health paths, or both (when both addresses are the same). */
export interface OpsRoutes {
  readonly metrics?: { render(): Promise<string>; readonly contentType: string };
  readonly health?: {
    readonly livePath: string;
    readonly readyPath: string;
    readonly live: Record<string, HealthCheck>;
    readonly ready: Record<string, HealthCheck>;
  };
}

function runChecks(checks: Record<string, HealthCheck>): { ok: boolean; body: string } {
  const results = Object.fromEntries(Object.entries(checks).map(([name, check]) => [name, check() ?? 'ok']));
  return { ok: Object.values(results).every((state) => state === 'ok'), body: JSON.stringify(results) };
}

/**
 * A plain-HTTP listener of the agent for Prometheus (`GET /metrics`) and Kubernetes probes (`GET /live`, `/ready`,
 * as SPIRE's health_checks listener): 200 with each check's `ok`, or 503 naming what failed. Meant for localhost or
 * the pod network; it serves nothing else (404) and reads no body.
 */
export class OpsServer {
  private server: Server | undefined;

  constructor(
    private readonly address: HostPort,
    private readonly routes: OpsRoutes,
  ) {}

  async start(): Promise<AddressInfo> {
    const { metrics, health } = this.routes;
    const server = createServer({ headersTimeout: 10_000, requestTimeout: 10_000 }, (request, response) => {
      const path = (request.url ?? '').split('?')[0];
      const send = (status: number, type: string, body: string): void => {
        response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
        response.end(request.method === 'HEAD' ? undefined : body);
      };
      if (request.method !== 'GET' && request.method !== 'HEAD') {
        return send(405, 'text/plain; charset=utf-8', 'only GET and HEAD\n');
      }
      if (metrics !== undefined && path === '/metrics') {
        metrics.render().then(
          (text) => send(200, metrics.contentType, text),
          (error: unknown) => send(500, 'text/plain; charset=utf-8', `metrics failed: ${(error as Error).message}\n`),
        );
        return;
      }
      if (health !== undefined && (path === health.livePath || path === health.readyPath)) {
        const { ok, body } = runChecks(path === health.livePath ? health.live : health.ready);
        return send(ok ? 200 : 503, 'application/json', body);
      }
      send(404, 'text/plain; charset=utf-8', 'not found\n');
    });
    server.keepAliveTimeout = 10_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.address.host, port: this.address.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    return server.address() as AddressInfo;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
