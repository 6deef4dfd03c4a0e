import { Code } from '@connectrpc/connect';
import { collectProcessMetrics, SIGIL_VERSION } from '@sigil/runtime';
import * as promClient from 'prom-client';
import { Counter, Gauge, Registry } from 'prom-client';

/** What the metrics read at scrape time from the agent's caches and sync loop. */
export interface AgentMetricSources {
  /** Entries cached, entries holding an X509-SVID, JWT-SVIDs cached and their bytes. */
  cacheSizes(): { entries: number; x509Svids: number; jwtSvids: number; jwtSvidBytes: number };
  /**
   * SVIDs held past their expiry, which the agent no longer serves: workload X509-SVIDs with no valid replacement,
   * and the agent's own SVID (0 or 1). Optional for tests of other metrics.
   */
  expiredSvids?(): { workload: number; agent: number };
  /** Whether the last save of the agent state to the data dir failed (a full disk). */
  stateUnsaved?(): boolean;
}

/** gRPC's name of a status code (`PERMISSION_DENIED`), the label operators know from every gRPC dashboard. */
export function grpcCodeName(code: Code): string {
  if (code === Code.Canceled) return 'CANCELLED';
  return (Code[code] ?? 'UNKNOWN').replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase();
}

/**
 * The agent's Prometheus metrics (`--metrics-address`), in a registry of its own. Counters are told by the agent's
 * loops through plain callbacks; sizes and sync age are read at scrape time.
 */
export class AgentMetrics {
  readonly registry = new Registry();
  private readonly calls = new Counter({
    name: 'sigil_agent_workload_api_calls_total',
    help: 'Workload API calls ended, by RPC and gRPC status code (a stream counts when it ends; CANCELLED: the client left)',
    labelNames: ['rpc', 'code'] as const,
    registers: [this.registry],
  });
  private readonly attestations = new Counter({
    name: 'sigil_agent_node_attestations_total',
    help: 'Node attestations of this agent, by method and outcome',
    labelNames: ['method', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly renewals = new Counter({
    name: 'sigil_agent_svid_renewals_total',
    help: "Renewals of the agent's own X509-SVID, by outcome",
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  private readonly rotations = new Counter({
    name: 'sigil_agent_svid_rotations_total',
    help: 'Workload X509-SVIDs signed for the cache (new entries and rotations), by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  private readonly forcedRotations = new Counter({
    name: 'sigil_agent_tainted_svids_total',
    help:
      'SVIDs a tainted authority had issued: X509-SVIDs whose rotation was brought forward (svid: agent, workload), ' +
      'cached JWT-SVIDs dropped (svid: jwt)',
    labelNames: ['svid'] as const,
    registers: [this.registry],
  });
  private readonly syncs = new Counter({
    name: 'sigil_agent_syncs_total',
    help: 'Entry syncs with the server, by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  private readonly lastSync = new Gauge({
    name: 'sigil_agent_last_sync_timestamp_seconds',
    help: 'When the last successful entry sync ended, in seconds since the epoch (0: none yet)',
    registers: [this.registry],
  });
  private readonly revision = new Gauge({
    name: 'sigil_agent_sync_revision',
    help: 'Registry revision of the last successful entry sync',
    registers: [this.registry],
  });
  private lastSyncMs: number | undefined;

  constructor(
    sources: AgentMetricSources,
    private readonly now: () => number = Date.now,
  ) {
    const startedMs = now();
    collectProcessMetrics(promClient, this.registry, 'sigil_agent_');
    new Gauge({
      name: 'sigil_agent_build_info',
      help: 'Always 1; the labels name the Sigil version and the Node.js version running it',
      labelNames: ['version', 'node_version'] as const,
      registers: [this.registry],
    }).set({ version: SIGIL_VERSION, node_version: process.version }, 1);
    const syncAgeSeconds = (): number => (this.now() - (this.lastSyncMs ?? startedMs)) / 1000;
    new Gauge({
      name: 'sigil_agent_sync_age_seconds',
      help: 'Time since the last successful entry sync (since the agent started, before the first): the sync lag',
      registers: [this.registry],
      collect() {
        this.set(syncAgeSeconds());
      },
    });
    const sizes: [string, string, (s: ReturnType<AgentMetricSources['cacheSizes']>) => number][] = [
      ['sigil_agent_cached_entries', 'Registration entries authorised for this agent, cached', (s) => s.entries],
      ['sigil_agent_cached_x509_svids', 'Cached entries that hold an X509-SVID', (s) => s.x509Svids],
      ['sigil_agent_cached_jwt_svids', 'JWT-SVIDs cached', (s) => s.jwtSvids],
      ['sigil_agent_jwt_svid_cache_bytes', 'Bytes of the JWT-SVIDs cached', (s) => s.jwtSvidBytes],
    ];
    const expired = sources.expiredSvids?.bind(sources);
    if (expired !== undefined) {
      new Gauge({
        name: 'sigil_agent_expired_svids',
        help:
          'SVIDs that expired before the agent could renew them and are no longer served (svid: workload, the ' +
          "X509-SVIDs with no valid replacement; agent, the agent's own SVID, 0 or 1); why is in the agent log",
        labelNames: ['svid'] as const,
        registers: [this.registry],
        collect() {
          const counts = expired();
          this.set({ svid: 'workload' }, counts.workload);
          this.set({ svid: 'agent' }, counts.agent);
        },
      });
    }
    const unsaved = sources.stateUnsaved?.bind(sources);
    if (unsaved !== undefined) {
      new Gauge({
        name: 'sigil_agent_state_unsaved',
        help: '1 while the agent state could not be saved to the data dir (a full disk; the agent retries), else 0',
        registers: [this.registry],
        collect() {
          this.set(unsaved() ? 1 : 0);
        },
      });
    }
    for (const [name, help, pick] of sizes) {
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(pick(sources.cacheSizes()));
        },
      });
    }
  }

  nodeAttestation(method: string, outcome: 'ok' | 'failed'): void {
    this.attestations.inc({ method, outcome });
  }

  svidRenewal(outcome: 'ok' | 'failed'): void {
    this.renewals.inc({ outcome });
  }

  svidsSigned(signed: number, refused: number): void {
    if (signed > 0) this.rotations.inc({ outcome: 'signed' }, signed);
    if (refused > 0) this.rotations.inc({ outcome: 'refused' }, refused);
  }

  taintedSvids(svid: 'agent' | 'workload' | 'jwt', count: number): void {
    if (count > 0) this.forcedRotations.inc({ svid }, count);
  }

  syncSucceeded(revision: number): void {
    this.lastSyncMs = this.now();
    this.syncs.inc({ outcome: 'ok' });
    this.lastSync.set(this.lastSyncMs / 1000);
    this.revision.set(revision);
  }

  syncFailed(): void {
    this.syncs.inc({ outcome: 'failed' });
  }

  /** When the last sync succeeded (ms since the epoch), for readiness. */
  get lastSyncAtMs(): number | undefined {
    return this.lastSyncMs;
  }

  /**
   * Counts one ended Workload API (or SDS) call by RPC and status code, including calls the security header check
   * refused: the Workload API server's `onCallEnd`. A stream is counted when it ends: OK when the server ended it,
   * its error's code when it failed, CANCELLED when the client went away first.
   */
  readonly callEnded = (call: { readonly method: { readonly name: string } }, code: Code | 'OK'): void => {
    this.calls.inc({ rpc: call.method.name, code: code === 'OK' ? 'OK' : grpcCodeName(code) });
  };

  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
