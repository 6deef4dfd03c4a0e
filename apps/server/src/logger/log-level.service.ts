import { Injectable } from '@nestjs/common';
import { LogLevelControl, LogLevelError, type LogLevel, type LogLevels } from '@sigil/logging';
import type { Logger } from 'pino';
import { AppError } from '../common/errors.js';

export type { LogLevels };

/**
 * The server's log level while it runs (SPIRE's `logger get|set|reset`; the rule is `LogLevelControl`'s, shared with
 * the agent). `createServerApp` attaches the root logger once the app is built.
 */
@Injectable()
export class LogLevelService {
  private control: LogLevelControl | undefined;

  attach(logger: Logger, launch: LogLevel): void {
    this.control = new LogLevelControl(logger, launch);
  }

  get(): LogLevels {
    return this.attached().get();
  }

  set(level: string): LogLevels {
    try {
      return this.attached().set(level);
    } catch (error) {
      if (error instanceof LogLevelError) throw new AppError('invalid_argument', error.message);
      throw error;
    }
  }

  reset(): LogLevels {
    return this.attached().reset();
  }

  private attached(): LogLevelControl {
    if (this.control === undefined) throw new AppError('unavailable', 'the server logger is not attached yet');
    return this.control;
  }
}
