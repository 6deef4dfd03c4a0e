import { Inject, Injectable, Logger } from '@nestjs/common';
import { CLOCK, type Clock } from '../common/clock.js';
import { AuditRepository } from './audit.repository.js';

export interface AuditEvent {
  actor: string;
  action: string;
  target: string | null;
  /** `ok` or the error kind. */
  result: string;
  statusCode: number;
}

const MAX_TARGET_LENGTH = 4096;

@Injectable()
export class AuditService {
  private readonly logger = new Logger(AuditService.name);

  constructor(
    private readonly repository: AuditRepository,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  /**
   * Writes one audit record. A failure to write is logged as an error and not thrown: the mutation it describes
   * has already happened, and the caller must learn its real outcome.
   */
  async record(event: AuditEvent): Promise<void> {
    const target =
      event.target !== null && event.target.length > MAX_TARGET_LENGTH
        ? `${event.target.slice(0, MAX_TARGET_LENGTH)}…`
        : event.target;
    try {
      await this.repository.insert({ ...event, target, at: this.clock.now() });
    } catch (error) {
      this.logger.error({ msg: 'audit record could not be written', ...event, err: error });
    }
  }
}
