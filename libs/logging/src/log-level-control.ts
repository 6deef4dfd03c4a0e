import type { Logger } from 'pino';
import { LOG_LEVELS, type LogLevel } from './logging.js';

/** A service's log level now and at launch (SPIRE's logger API: GetLogger). */
export interface LogLevels {
  readonly current: LogLevel;
  readonly launch: LogLevel;
}

/** The wire form of {@link LogLevels} in both admin APIs (`/v1/logger`) and their CLIs' `--output json`. */
export interface LoggerLevelsBody {
  current_level: LogLevel;
  launch_level: LogLevel;
}

/** A level name that is not one of {@link LOG_LEVELS}. */
export class LogLevelError extends Error {
  override readonly name = 'LogLevelError';
  readonly code = 'ERR_LOG_LEVEL_INVALID';
}

export function toLoggerLevelsBody(levels: LogLevels): LoggerLevelsBody {
  return { current_level: levels.current, launch_level: levels.launch };
}

/**
 * Changes the level of a service's root logger while it runs (SPIRE's `logger set|reset`, on the server and on the
 * agent): in memory only, so a restart comes back at the launch level. Levels are named as in {@link LOG_LEVELS},
 * case-insensitively.
 */
export class LogLevelControl {
  constructor(
    private readonly root: Logger,
    private readonly launch: LogLevel,
  ) {}

  get(): LogLevels {
    return { current: this.root.level as LogLevel, launch: this.launch };
  }

  /** @throws LogLevelError naming the accepted levels */
  set(level: unknown): LogLevels {
    const name = typeof level === 'string' ? level.toLowerCase() : undefined;
    if (name === undefined || !(LOG_LEVELS as readonly string[]).includes(name)) {
      throw new LogLevelError(`level: must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`);
    }
    this.root.level = name;
    return this.get();
  }

  reset(): LogLevels {
    this.root.level = this.launch;
    return this.get();
  }
}
