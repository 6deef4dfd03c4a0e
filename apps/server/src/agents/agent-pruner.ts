import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { PRUNE_INTERVAL_MS } from '../entries/entry-pruner.js';
import { AgentsService } from './agents.service.js';

/**
 * Removes long-expired agents that can re-attest once a minute, as SPIRE's `prune_attested_nodes_expired_for` does
 * (every replica; each statement deletes what is still there). Off when the setting is 0.
 */
@Injectable()
export class AgentPruner implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(AgentPruner.name);
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly agents: AgentsService,
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'pruneAttestedNodesExpiredForSeconds'>,
  ) {}

  onApplicationBootstrap(): void {
    if (this.config.pruneAttestedNodesExpiredForSeconds === 0) return;
    this.timer = setInterval(() => {
      this.running ??= this.prune().finally(() => (this.running = undefined));
    }, PRUNE_INTERVAL_MS);
    this.timer.unref();
    this.running = this.prune().finally(() => (this.running = undefined));
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** One pruning pass; a failure is logged and the next pass tries again. */
  async prune(): Promise<void> {
    try {
      await this.agents.pruneExpired(this.config.pruneAttestedNodesExpiredForSeconds);
    } catch (error) {
      this.logger.warn({ msg: 'pruning expired agents failed', err: error });
    }
  }
}
