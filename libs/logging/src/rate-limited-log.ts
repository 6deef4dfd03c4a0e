import { type LoggerService } from '@nestjs/common';

/**
 * Bounded logging for lines a caller can trigger at will (refused requests, failed workload attestations): a caller
 * that repeats a refusal thousands of times a second must not be able to fill the disk or hold the event loop in
 * synchronous log writes. Each call site names its lines by a fixed key; {@link RateLimitedLog} lets a few lines per
 * key through per interval and then counts the rest, reported in one summary line when the interval ends.
 */

/** Lines let through per key and interval by default. */
export const LOG_LINES_PER_INTERVAL = 10;
/** The default interval, in milliseconds. */
export const LOG_INTERVAL_MS = 10_000;
/** Keys tracked at once by default; lines of further keys share one overflow key (and its budget). */
export const LOG_MAX_KEYS = 100;
/** Longest request path written to the log, in characters; longer ones are cut and end with `…`. */
export const LOG_PATH_MAX_LENGTH = 256;
/** Longest caller-influenced text (an error message, a reason) written to the log, in characters. */
export const LOG_TEXT_MAX_LENGTH = 512;

const OVERFLOW_KEY = '(other)';

/** Cuts `text` to at most `maxLength` characters, marking a cut with a final `…`. */
export function truncateForLog(text: string, maxLength: number = LOG_TEXT_MAX_LENGTH): string {
  return text.length <= maxLength ? text : `${text.slice(0, Math.max(0, maxLength - 1))}…`;
}

/**
 * The path of a request URL as it may be logged: without its query string or fragment (a caller chooses those, and
 * they may carry secrets), cut to `maxLength` characters.
 */
export function logPath(url: string, maxLength: number = LOG_PATH_MAX_LENGTH): string {
  const end = url.search(/[?#]/);
  return truncateForLog(end === -1 ? url : url.slice(0, end), maxLength);
}

export interface RateLimitedLogOptions {
  /** Lines let through per key and interval (default {@link LOG_LINES_PER_INTERVAL}). */
  linesPerInterval?: number;
  /** Interval length in milliseconds (default {@link LOG_INTERVAL_MS}). */
  intervalMs?: number;
  /** Keys tracked at once (default {@link LOG_MAX_KEYS}). */
  maxKeys?: number;
  /** Current time in milliseconds; tests inject a clock. */
  now?: () => number;
  /**
   * Whether a timer writes the summary when an interval with dropped lines ends (default true; the timer never keeps
   * the process alive). Without it, summaries are written by the next line of the key, {@link RateLimitedLog.flush}
   * or {@link RateLimitedLog.close}.
   */
  timer?: boolean;
}

/** A log line: the message and its fields, as passed to Nest's `Logger`. */
export type LogFields = { msg: string } & Record<string, unknown>;

type Level = 'warn' | 'error' | 'log';

interface KeyWindow {
  startMs: number;
  written: number;
  dropped: number;
  level: Level;
  msg: string;
}

/**
 * Rate limits log lines by key: at most `linesPerInterval` lines per key per interval reach the logger; the rest are
 * counted, and when the interval ends one summary line (same level, `dropped: N`, the key and the last message)
 * reports them. Keys must come from the call site (a fixed name, perhaps with a small set of reasons), never from
 * the caller; even so, at most `maxKeys` are tracked and the rest share one budget.
 */
export class RateLimitedLog {
  private readonly windows = new Map<string, KeyWindow>();
  private readonly linesPerInterval: number;
  private readonly intervalMs: number;
  private readonly maxKeys: number;
  private readonly now: () => number;
  private readonly useTimer: boolean;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly logger: Pick<LoggerService, Level>,
    options: RateLimitedLogOptions = {},
  ) {
    this.linesPerInterval = options.linesPerInterval ?? LOG_LINES_PER_INTERVAL;
    this.intervalMs = options.intervalMs ?? LOG_INTERVAL_MS;
    this.maxKeys = options.maxKeys ?? LOG_MAX_KEYS;
    this.now = options.now ?? Date.now;
    this.useTimer = options.timer ?? true;
    if (!(Number.isInteger(this.linesPerInterval) && this.linesPerInterval >= 1)) {
      throw new RangeError('linesPerInterval: must be an integer of at least 1');
    }
    if (!(this.intervalMs > 0)) throw new RangeError('intervalMs: must be positive');
    if (!(Number.isInteger(this.maxKeys) && this.maxKeys >= 1)) {
      throw new RangeError('maxKeys: must be an integer of at least 1');
    }
  }

  /** Logs `fields` at warn level unless `key` has used its lines for this interval; true when written. */
  warn(key: string, fields: LogFields): boolean {
    return this.write('warn', key, fields);
  }

  /** Logs `fields` at error level unless `key` has used its lines for this interval; true when written. */
  error(key: string, fields: LogFields): boolean {
    return this.write('error', key, fields);
  }

  /** Logs `fields` at info level unless `key` has used its lines for this interval; true when written. */
  log(key: string, fields: LogFields): boolean {
    return this.write('log', key, fields);
  }

  /** Writes the summary of every key whose interval has ended with dropped lines, and forgets ended intervals. */
  flush(): void {
    const now = this.now();
    for (const [key, window] of this.windows) {
      if (now - window.startMs < this.intervalMs) continue;
      this.summarise(key, window);
      this.windows.delete(key);
    }
  }

  /** Writes every pending summary, even of intervals still running, and stops the timer (at shutdown). */
  close(): void {
    for (const [key, window] of this.windows) this.summarise(key, window);
    this.windows.clear();
    this.stopTimer();
  }

  private write(level: Level, requestedKey: string, fields: LogFields): boolean {
    const now = this.now();
    const key = this.windows.has(requestedKey) || this.trackRoom(now) ? requestedKey : OVERFLOW_KEY;
    let window = this.windows.get(key);
    if (window !== undefined && now - window.startMs >= this.intervalMs) {
      this.summarise(key, window);
      window = undefined;
    }
    if (window === undefined) {
      window = { startMs: now, written: 0, dropped: 0, level, msg: fields.msg };
      this.windows.set(key, window);
    }
    window.level = level;
    window.msg = fields.msg;
    if (window.written < this.linesPerInterval) {
      window.written += 1;
      this.logger[level](fields);
      return true;
    }
    window.dropped += 1;
    this.startTimer();
    return false;
  }

  /** Whether one more key may be tracked, after forgetting the keys whose interval has ended. */
  private trackRoom(now: number): boolean {
    if (this.windows.size < this.maxKeys) return true;
    for (const [key, window] of this.windows) {
      if (now - window.startMs >= this.intervalMs) {
        this.summarise(key, window);
        this.windows.delete(key);
      }
    }
    // The overflow key itself always has room.
    return this.windows.size < this.maxKeys;
  }

  private summarise(key: string, window: KeyWindow): void {
    if (window.dropped === 0) return;
    this.logger[window.level]({
      msg: `log lines dropped: ${window.dropped} more like "${window.msg}" within ${this.intervalMs} ms`,
      logKey: key,
      dropped: window.dropped,
      intervalMs: this.intervalMs,
    });
    window.dropped = 0;
  }

  private startTimer(): void {
    if (!this.useTimer || this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
      if ([...this.windows.values()].some((window) => window.dropped > 0)) this.startTimer();
    }, this.intervalMs);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
