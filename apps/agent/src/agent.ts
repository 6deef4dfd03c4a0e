import { type AddressInfo } from 'node:net';
import { type Logger as PinoLogger } from 'pino';
import { ServerClient } from './client/server-client.js';
import { type Clock, systemClock } from '@sigil/runtime';
import { createRootLogger, PinoLoggerService } from './common/logging.js';
import { type AgentConfig, insecureBootstrapWarning } from './config.js';
import { AgentIdentity } from './manager/agent-identity.js';
import { type AgentFatalError, AgentManager } from './manager/agent-manager.js';
import { AgentStorage } from './storage/agent-storage.js';
import { EntrySync } from './manager/entry-sync.js';
import { JwtSvidCache } from './manager/jwt-svid-cache.js';
import { SvidCache, type TaintOutcome } from './manager/svid-cache.js';
import { addIssuer } from './manager/svid-issuers.js';
import { SvidRotator } from './manager/svid-rotator.js';
import { PerUidAttestationLimit } from './endpoints/workload-api/attestation-limit.js';
import { WorkloadApiHandler } from './endpoints/workload-api/workload-api.handler.js';
import { WorkloadApiServer } from './endpoints/workload-api/workload-api.server.js';
import { SdsHandler } from './endpoints/sds/sds.handler.js';
import { createWorkloadAttestors } from './attestor/workload/registry.js';
import { type HealthCheck, OpsServer } from './endpoints/observability/ops-server.js';
import { AgentAdminServer } from './endpoints/admin/admin-server.js';
import { LogLevelControl, ContextLogger } from '@sigil/logging';

export interface AgentOptions {
  /** Root logger; by default JSON lines on stdout at the configured level. */
  readonly logger?: PinoLogger;
  readonly clock?: Clock;
}

/** A running agent. */
export interface RunningAgent {
  readonly socketPath: string;
  /** The agent's SPIFFE ID. */
  readonly agentId: string;
  /** The admin socket (`logger get|set|reset`), when configured. */
  readonly adminSocketPath?: string;
  /** Where `/metrics` and the health probes listen, when configured (port 0 resolved). */
  readonly metricsAddress?: AddressInfo;
  readonly healthAddress?: AddressInfo;
  /** Settles with the reason when the agent cannot go on (refused by the server and unable to attest again). */
  readonly fatal: Promise<AgentFatalError>;
  /** Closes the Workload API socket (streams end with UNAVAILABLE) and stops every loop; safe to call twice. */
  stop(): Promise<void>;
}

/**
 * The agent's composition root: plain classes wired by hand. The agent serves no HTTP and has a dozen
 * collaborators with one wiring, so Nest's injector would add start-up time and indirection without removing any
 * code (its classes log through @sigil/logging's `ContextLogger`, not Nest's `Logger`: the agent loads no Nest). Order: check that the Workload API
 * socket's directory is safe, resume or attest (a failure stops here, before any socket exists), open the Workload
 * API, which answers UNAVAILABLE until the first sync has arrived, then start the sync loop (the rotator runs off it).
 */
export async function startAgent(config: AgentConfig, options: AgentOptions = {}): Promise<RunningAgent> {
  const root = options.logger ?? createRootLogger(config.logLevel, undefined, config);
  ContextLogger.use(new PinoLoggerService(root));
  const logger = new ContextLogger('SigilAgent');
  const clock = options.clock ?? systemClock;
  const warning = insecureBootstrapWarning(config);
  if (warning !== undefined) logger.warn({ msg: warning });

  const identity = new AgentIdentity(config.bootstrapTrust, config.trustDomain);
  const client = new ServerClient({
    addresses: config.serverAddresses,
    trust: (purpose) => (purpose === 'attestation' ? identity.attestationTrust() : identity.trust()),
    credentials: () => identity.credentials(),
    attestationCredentials: () => identity.attestationCredentials(clock.now()),
    // As many JWT-SVID connections as the JWT-SVID lane sends requests at once.
    connections: { jwt: config.jwtSvidLimits.maxConcurrentSigning },
    logger: new ContextLogger('ServerClient'),
  });
  const storage = new AgentStorage(config.dataDir);
  // Told after the metrics exist (the cache is built first: the metrics read its sizes).
  let onTaint: ((outcome: TaintOutcome) => void) | undefined;
  const cache = new SvidCache(
    new JwtSvidCache((entryId, audience) => client.signJwtSvid(entryId, audience), {
      clock,
      limits: config.jwtSvidLimits,
    }),
    clock,
    new ContextLogger('SvidCache'),
    Math.random,
    (outcome) => onTaint?.(outcome),
    { ...(config.svidCacheMaxSize !== undefined && { svidCacheMaxSize: config.svidCacheMaxSize }) },
  );
  // prom-client (with @opentelemetry/api: 88 modules) is loaded only when `/metrics` is served (bench/README.md).
  const metrics =
    config.metricsAddress === undefined
      ? undefined
      : new (await import('./endpoints/observability/agent-metrics.js')).AgentMetrics(
          {
            cacheSizes: () => {
              const jwt = cache.jwtSvidCacheSize();
              return { entries: cache.size, x509Svids: cache.svidCount, jwtSvids: jwt.tokens, jwtSvidBytes: jwt.bytes };
            },
            expiredSvids: () => {
              const own = identity.current();
              const agentExpired = own !== undefined && own.expiresAt.getTime() <= clock.now().getTime();
              return { workload: cache.expiredSvidCount(), agent: agentExpired ? 1 : 0 };
            },
            stateUnsaved: (): boolean => manager.unsavedReason() !== undefined,
          },
          () => clock.now().getTime(),
        );
  if (metrics !== undefined) {
    onTaint = ({ x509Svids, jwtSvids }) => {
      metrics.taintedSvids('workload', x509Svids);
      metrics.taintedSvids('jwt', jwtSvids);
    };
  }
  const attestors = createWorkloadAttestors({ config, clock, cache });
  // One attestation limit for both services on the socket: a uid's SDS calls wait their turn with its others.
  const attestation = new PerUidAttestationLimit(attestors, config.workloadApiLimits.maxAttestationsPerUid);
  const handler = new WorkloadApiHandler(attestation, cache);
  const sds = new SdsHandler(attestation, cache, config.sds);
  const server = new WorkloadApiServer({
    socketPath: config.socketPath,
    service: handler.service(),
    sds: sds.service(),
    limits: config.workloadApiLimits,
    clock,
    ...(metrics && { onCallEnd: metrics.callEnded }),
  });
  const admin =
    config.adminSocketPath === undefined
      ? undefined
      : new AgentAdminServer(config.adminSocketPath, new LogLevelControl(root, config.logLevel));
  // Before attesting: an agent that could not serve must not spend its join token.
  await attestors.prepare();
  await server.prepare();
  await admin?.prepare();
  // The sync is created once the agent is attested; until then there is no poll to restart.
  let reportChanged = (): void => undefined;
  const manager = new AgentManager(identity, client, storage, {
    attestation: config.attestation,
    trustDomain: config.trustDomain,
    onBundle: (bundle) => cache.setOwnBundle(bundle),
    clock,
    logger: new ContextLogger('AgentManager'),
    onRenewal: (outcome: 'ok' | 'failed') => {
      metrics?.svidRenewal(outcome);
      if (outcome === 'ok') reportChanged();
    },
    ...(metrics && {
      onAttestation: (method: string, outcome: 'ok' | 'failed') => metrics.nodeAttestation(method, outcome),
      onTaintedSvid: () => metrics.taintedSvids('agent', 1),
    }),
  });
  let fatal = false;
  void manager.fatal.then(() => {
    fatal = true;
  });
  await manager.start();
  const agentId = identity.current()?.spiffeId.toString() ?? '';
  const ownBundle = identity.ownBundle();
  if (ownBundle !== undefined) cache.setOwnBundle(ownBundle);

  const rotator = new SvidRotator(cache, client, {
    bundle: () => identity.ownBundle(),
    clock,
    onAgentRefused: (error) => manager.agentRefused(error),
    logger: new ContextLogger('SvidRotator'),
    onBatch: (signed: number, refused: number) => {
      metrics?.svidsSigned(signed, refused);
      reportChanged();
    },
  });
  // Lazy signing (--svid-cache-max-size): a caller's first request has its SVIDs signed at once.
  cache.onSigningWanted(() => rotator.schedule());
  let synced = false;
  let lastSyncAtMs: number | undefined;
  const sync = new EntrySync(client, cache, rotator, {
    onOwnBundle: async (bundle) => {
      identity.setBundle(bundle);
      await manager.persistBundle(bundle);
    },
    onAgentRefused: (error) => manager.agentRefused(error),
    svidIssuers: () => {
      const issuers = cache.svidIssuers(clock.now());
      for (const [id, until] of manager.svidIssuers()) addIssuer(issuers, id, until);
      return issuers;
    },
    onTainted: (tainted) => manager.taint(tainted),
    onSyncFailed: () => metrics?.syncFailed(),
    onSynced: (revision) => {
      lastSyncAtMs = clock.now().getTime();
      metrics?.syncSucceeded(revision);
      if (synced) return;
      synced = true;
      logger.log({ msg: 'entries synced, serving identities', revision, entries: cache.size });
    },
    logger: new ContextLogger('EntrySync'),
  });
  reportChanged = () => sync.reportChanged();
  const opsServers: OpsServer[] = [];
  const stopLoops = async (): Promise<void> => {
    await admin?.stop();
    for (const ops of opsServers.splice(0)) await ops.stop();
    await sync.stop();
    await rotator.stop();
    await manager.stop();
    cache.close();
    client.close();
  };
  // The socket listens before the first sync can be announced, so "serving identities" is true when logged.
  try {
    await server.start();
  } catch (error) {
    await stopLoops();
    throw error;
  }
  sync.start();
  let metricsAddress: AddressInfo | undefined;
  let healthAddress: AddressInfo | undefined;
  try {
    const now = (): number => clock.now().getTime();
    const live: Record<string, HealthCheck> = {
      sync_loop: () => (sync.isRunning ? undefined : 'the entry sync loop has ended'),
      agent: () => (fatal ? 'the agent cannot go on (see its log) and is stopping' : undefined),
    };
    const ready: Record<string, HealthCheck> = {
      attested: () => {
        const svid = identity.current();
        if (svid === undefined) return 'no agent SVID';
        return svid.expiresAt.getTime() <= now() ? `agent SVID expired at ${svid.expiresAt.toISOString()}` : undefined;
      },
      sync: () => {
        if (lastSyncAtMs === undefined) return 'no entry sync yet';
        const age = now() - lastSyncAtMs;
        const max = config.health?.readyMaxSyncAgeMs ?? Infinity;
        return age > max ? `last entry sync ${Math.round(age / 1000)}s ago (over ${max / 1000}s)` : undefined;
      },
      workload_api: () => (server.isListening ? undefined : 'the Workload API socket is not listening'),
    };
    const health = config.health && {
      livePath: config.health.livePath,
      readyPath: config.health.readyPath,
      live,
      ready,
    };
    const sameAddress =
      config.metricsAddress !== undefined &&
      config.health !== undefined &&
      config.metricsAddress.text === config.health.address.text &&
      config.metricsAddress.port !== 0;
    if (config.metricsAddress !== undefined && metrics !== undefined) {
      const ops = new OpsServer(config.metricsAddress, { metrics, ...(sameAddress && health && { health }) });
      opsServers.push(ops);
      metricsAddress = await ops.start();
      if (sameAddress) healthAddress = metricsAddress;
    }
    if (config.health !== undefined && health !== undefined && !sameAddress) {
      const ops = new OpsServer(config.health.address, { health });
      opsServers.push(ops);
      healthAddress = await ops.start();
    }
    await admin?.start();
  } catch (error) {
    await server.stop();
    await stopLoops();
    throw error;
  }
  logger.log({
    msg: 'sigil-agent running',
    agentId,
    socketPath: config.socketPath,
    servers: config.serverAddresses.map((address) => address.text),
    ...(metricsAddress && { metricsAddress: `${metricsAddress.address}:${metricsAddress.port}` }),
    ...(healthAddress && { healthAddress: `${healthAddress.address}:${healthAddress.port}` }),
    ...(admin && { adminSocketPath: admin.socketPath }),
  });

  let stopping: Promise<void> | undefined;
  return {
    socketPath: config.socketPath,
    agentId,
    ...(admin && { adminSocketPath: admin.socketPath }),
    ...(metricsAddress && { metricsAddress }),
    ...(healthAddress && { healthAddress }),
    fatal: manager.fatal,
    stop: () =>
      (stopping ??= (async () => {
        await server.stop();
        await stopLoops();
        logger.log({ msg: 'sigil-agent stopped' });
      })()),
  };
}
