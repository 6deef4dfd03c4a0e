import { Logger } from '@nestjs/common';
import { type Logger as PinoLogger } from 'pino';
import { ServerClient } from './client/server-client.js';
import { type Clock, systemClock } from '@sigil/runtime';
import { createRootLogger, PinoLoggerService } from './common/logging.js';
import { type AgentConfig, insecureBootstrapWarning } from './config.js';
import { AgentIdentity } from './manager/agent-identity.js';
import { AgentManager } from './manager/agent-manager.js';
import { AgentStorage } from './storage/agent-storage.js';
import { EntrySync } from './manager/entry-sync.js';
import { JwtSvidCache } from './manager/jwt-svid-cache.js';
import { SvidCache } from './manager/svid-cache.js';
import { SvidRotator } from './manager/svid-rotator.js';
import { PerUidAttestationLimit } from './endpoints/workload-api/attestation-limit.js';
import { WorkloadApiHandler } from './endpoints/workload-api/workload-api.handler.js';
import { WorkloadApiServer } from './endpoints/workload-api/workload-api.server.js';
import { SdsHandler } from './endpoints/sds/sds.handler.js';
import { createWorkloadAttestors } from './attestor/workload/registry.js';

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
  /** Settles with the reason when the agent cannot go on (refused by the server and unable to attest again). */
  readonly fatal: Promise<Error>;
  /** Closes the Workload API socket (streams end with UNAVAILABLE) and stops every loop; safe to call twice. */
  stop(): Promise<void>;
}

/**
 * The agent's composition root: plain classes wired by hand. The agent serves no HTTP and has a dozen
 * collaborators with one wiring, so Nest's injector would add start-up time and indirection without removing any
 * code; only Nest's `Logger` is kept, as the Workload API classes log through it. Order: check that the Workload API
 * socket's directory is safe, resume or attest (a failure stops here, before any socket exists), open the Workload
 * API, which answers UNAVAILABLE until the first sync has arrived, then start the sync loop (the rotator runs off it).
 */
export async function startAgent(config: AgentConfig, options: AgentOptions = {}): Promise<RunningAgent> {
  const root = options.logger ?? createRootLogger(config.logLevel);
  Logger.overrideLogger(new PinoLoggerService(root));
  const logger = new Logger('SigilAgent');
  const clock = options.clock ?? systemClock;
  const warning = insecureBootstrapWarning(config);
  if (warning !== undefined) logger.warn({ msg: warning });

  const identity = new AgentIdentity(config.bootstrapTrust, config.trustDomain);
  const client = new ServerClient({
    addresses: config.serverAddresses,
    trust: () => identity.trust(),
    credentials: () => identity.credentials(),
    // As many JWT-SVID connections as the JWT-SVID lane sends requests at once.
    connections: { jwt: config.jwtSvidLimits.maxConcurrentSigning },
    logger: new Logger('ServerClient'),
  });
  const storage = new AgentStorage(config.dataDir);
  const cache = new SvidCache(
    new JwtSvidCache((entryId, audience) => client.signJwtSvid(entryId, audience), {
      clock,
      limits: config.jwtSvidLimits,
    }),
    clock,
    new Logger('SvidCache'),
  );
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
  });
  // Before attesting: an agent that could not serve must not spend its join token.
  await attestors.prepare();
  await server.prepare();
  const manager = new AgentManager(identity, client, storage, {
    attestation: config.attestation,
    trustDomain: config.trustDomain,
    onBundle: (bundle) => cache.setOwnBundle(bundle),
    clock,
    logger: new Logger('AgentManager'),
  });
  await manager.start();
  const agentId = identity.current()?.spiffeId.toString() ?? '';
  const ownBundle = identity.ownBundle();
  if (ownBundle !== undefined) cache.setOwnBundle(ownBundle);

  const rotator = new SvidRotator(cache, client, {
    bundle: () => identity.ownBundle(),
    clock,
    onAgentRefused: (error) => manager.agentRefused(error),
    logger: new Logger('SvidRotator'),
  });
  let synced = false;
  const sync = new EntrySync(client, cache, rotator, {
    onOwnBundle: async (bundle) => {
      identity.setBundle(bundle);
      await storage.saveBundle(bundle).catch((error: unknown) => {
        logger.warn({ msg: 'could not persist the trust bundle', reason: (error as Error).message });
      });
    },
    onAgentRefused: (error) => manager.agentRefused(error),
    onSynced: (revision) => {
      if (synced) return;
      synced = true;
      logger.log({ msg: 'entries synced, serving identities', revision, entries: cache.size });
    },
    logger: new Logger('EntrySync'),
  });
  const stopLoops = async (): Promise<void> => {
    await sync.stop();
    await rotator.stop();
    await manager.stop();
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
  logger.log({
    msg: 'sigil-agent running',
    agentId,
    socketPath: config.socketPath,
    servers: config.serverAddresses.map((address) => address.text),
  });

  let stopping: Promise<void> | undefined;
  return {
    socketPath: config.socketPath,
    agentId,
    fatal: manager.fatal,
    stop: () =>
      (stopping ??= (async () => {
        await server.stop();
        await stopLoops();
        logger.log({ msg: 'sigil-agent stopped' });
      })()),
  };
}
