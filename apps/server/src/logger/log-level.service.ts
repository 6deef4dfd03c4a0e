import { Injectable } from '@nestjs/common';
import { LOG_LEVELS, type LogLevel } from '@sigil/logging';
import type { Logger } from 'pino';
import { AppError } from '../common/errors.js';

/** The server's log level now and at launch (SPIRE's `logger` API: GetLogger). */
export interface LogLevels {
  readonly current: LogLevel;
  readonly launch: LogLevel;
}

/**
 * Changes the level of the server's root logger while it runs (SPIRE's `logger set|reset`): in memory only, so a
 * restart comes back at the configured level. `createServerApp` attaches the root logger once the app is built.
 */
@Injectable()
export class LogLevelService {
  private logger: Logger | undefined;
  private launch: LogLevel = 'info';

  attach(logger: Logger, launch: LogLevel): void {
    this.logger = logger;
    this.launch = launch;
  }

  get(): LogLevels {
    return { current: this.root().level as LogLevel, launch: this.launch };
  }

  set(level: string): LogLevels {
    const name = level.toLowerCase();
    if (!(LOG_LEVELS as readonly string[]).includes(name)) {
      throw new AppError(
        'invalid_argument',
        `level: must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`,
      );
    }
    this.root().level = name;
    return this.get();
  }

  reset(): LogLevels {
    this.root().level = this.launch;
    return this.get();
  }

  private root(): Logger {
    if (this.logger === undefined) throw new AppError('unavailable', 'the server logger is not attached yet');
    return this.logger;
  }
}
