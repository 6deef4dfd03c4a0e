import { type LoggerService } from '@nestjs/common';
import pino, { type DestinationStream, type LevelWithSilent, type Logger } from 'pino';

/**
 * JSON logging with pino, as the server does it: classes use Nest's `new Logger(X.name)` (the Workload API code
 * does), which {@link PinoLoggerService} turns into JSON lines with a `context` field; objects passed as the
 * message become fields (`{ msg, spiffeId, … }`).
 */

/** Field names whose values never reach the log, at the top level or one object down (STYLE.md §4.8). */
export const REDACTED_FIELDS = [
  'privateKey',
  'privateKeyPem',
  'key',
  'token',
  'joinToken',
  'svid',
  'authorization',
  'password',
  'secret',
  'nonce',
  'signature',
] as const;

const REDACT_PATHS = [...REDACTED_FIELDS, ...REDACTED_FIELDS.map((field) => `*.${field}`)];

/** The agent's root logger: JSON lines on stdout. `destination` lets tests capture them. */
export function createRootLogger(level: LevelWithSilent, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'sigil-agent' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      serializers: { err: pino.stdSerializers.errWithCause },
    },
    destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/** Adapts pino to Nest's LoggerService, so `new Logger(Context)` writes JSON lines with a `context` field. */
export class PinoLoggerService implements LoggerService {
  constructor(private readonly logger: Logger) {}

  log(message: unknown, ...params: unknown[]): void {
    this.write('info', message, params);
  }

  error(message: unknown, ...params: unknown[]): void {
    this.write('error', message, params);
  }

  warn(message: unknown, ...params: unknown[]): void {
    this.write('warn', message, params);
  }

  debug(message: unknown, ...params: unknown[]): void {
    this.write('debug', message, params);
  }

  verbose(message: unknown, ...params: unknown[]): void {
    this.write('trace', message, params);
  }

  fatal(message: unknown, ...params: unknown[]): void {
    this.write('fatal', message, params);
  }

  private write(level: Level, message: unknown, params: unknown[]): void {
    // Nest appends the context as the last string parameter.
    const context = typeof params.at(-1) === 'string' ? (params.at(-1) as string) : undefined;
    const fields: Record<string, unknown> = context ? { context } : {};
    if (message instanceof Error) {
      this.logger[level]({ ...fields, err: message }, message.message);
    } else if (typeof message === 'object' && message !== null) {
      const { msg, ...other } = message as Record<string, unknown>;
      this.logger[level]({ ...fields, ...other }, typeof msg === 'string' ? msg : undefined);
    } else {
      this.logger[level](fields, String(message));
    }
  }
}
