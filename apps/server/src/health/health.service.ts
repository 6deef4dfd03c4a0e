import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { AgentsService } from '../agents/agents.service.js';
import { CaService } from '../ca/ca.service.js';
import { EntriesService } from '../entries/entries.service.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { cachedRead } from './cached-read.js';
import { DatabasePingRepository } from './database-ping.repository.js';
import { MetricsService } from './metrics.service.js';

const DATABASE_PING_TIMEOUT_MS = 2000;
/** How long a database ping's answer is reused by `/readyz`: a probe flood costs one query per this time. */
export const READINESS_CACHE_MS = 1000;

export interface Readiness {
  database: string;
  authority: string;
}

@Injectable()
export class HealthService implements OnModuleInit {
  private readonly cachedPing: () => Promise<string>;

  constructor(
    private readonly database: DatabasePingRepository,
    private readonly ca: CaService,
    private readonly agents: AgentsService,
    private readonly entries: EntriesService,
    private readonly metrics: MetricsService,
    @Inject(CLOCK) clock: Clock,
  ) {
    this.cachedPing = cachedRead(
      () => this.pingDatabase(),
      READINESS_CACHE_MS,
      () => clock.now().getTime(),
    );
  }

  onModuleInit(): void {
    this.metrics.addGauge('sigil_agents', 'Attested agents (banned included)', () => this.agents.count());
    this.metrics.addGauge('sigil_entries', 'Registration entries', () => this.entries.countEntries());
    this.metrics.addLabelledGauge(
      'sigil_authority_expiry_timestamp_seconds',
      'When the active and prepared X.509 CA and JWT keys expire (not-after), in seconds since the epoch',
      ['kind', 'state'],
      () =>
        this.ca.authorityExpiries().map(({ kind, state, notAfter }) => ({
          labels: { kind, state },
          value: notAfter.getTime() / 1000,
        })),
    );
  }

  /**
   * Ready when the database answers and the CA and JWT authorities are active. The database answer is at most
   * {@link READINESS_CACHE_MS} old.
   *
   * @throws AppError `unavailable` naming every check that failed.
   */
  async readiness(): Promise<Readiness> {
    const checks: Readiness = {
      database: await this.cachedPing(),
      authority: this.ca.isReady() ? 'ok' : 'no active X.509 CA and JWT key yet',
    };
    const failed = Object.entries(checks).filter(([, state]) => state !== 'ok');
    if (failed.length > 0) {
      throw new AppError('unavailable', `not ready: ${failed.map(([name, state]) => `${name}: ${state}`).join('; ')}`);
    }
    return checks;
  }

  private async pingDatabase(): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve(`no answer within ${DATABASE_PING_TIMEOUT_MS} ms`), DATABASE_PING_TIMEOUT_MS);
    });
    try {
      return await Promise.race([
        this.database.ping().then(
          () => 'ok',
          (error: unknown) => `unreachable (${(error as Error).message})`,
        ),
        timeout,
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}
