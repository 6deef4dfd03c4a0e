import { type LoggerService } from '@nestjs/common';
import pino, { type DestinationStream, type LevelWithSilent, type Logger } from 'pino';

/**
 * JSON logging with pino for both apps, wrapped in a small Nest LoggerService (nestjs-pino 5 declares Node ≥ 22).
 * Classes keep using Nest's `new Logger(X.name)`; objects passed as the message become fields
 * (`{ msg, spiffeId, … }`). One redaction list serves the server and the agent, so neither can drift (STYLE §4.8).
 */

/** Field names whose values never reach the log, at the top level or one object down. */
export const REDACTED_FIELDS = [
  'privateKey',
  'privateKeyPem',
  'key',
  'kek',
  'token',
  'joinToken',
  'svid',
  'authorization',
  'password',
  'secret',
  'nonce',
  'signature',
] as const;

const REDACT_PATHS = [
  ...REDACTED_FIELDS,
  ...REDACTED_FIELDS.map((field) => `*.${field}`),
  'req.headers.authorization',
  'headers.authorization',
  '*.headers.authorization',
];

export interface JsonLoggerOptions {
  /** The `service` field of every line, e.g. `sigil-server`. */
  service: string;
  level: LevelWithSilent;
  /** Where lines go; stdout by default. Tests pass a stream to capture them. */
  destination?: DestinationStream;
}

/** A process's root logger: JSON lines with ISO times, secrets redacted. */
export function createJsonLogger(options: JsonLoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { service: options.service },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      serializers: { err: pino.stdSerializers.errWithCause },
    },
    options.destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

// Nest's own start-up chatter (one line per module and route) is debug detail, not lifecycle news.
const FRAMEWORK_CONTEXTS = new Set(['InstanceLoader', 'RoutesResolver', 'RouterExplorer', 'NestFactory']);

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
    // Nest appends the context as the last string parameter; error() may put a stack string before it.
    const context = typeof params.at(-1) === 'string' ? (params.at(-1) as string) : undefined;
    const rest = context === undefined ? params : params.slice(0, -1);
    const effective: Level = level === 'info' && context && FRAMEWORK_CONTEXTS.has(context) ? 'debug' : level;
    const fields: Record<string, unknown> = context ? { context } : {};
    const stack = rest.find((param): param is string => typeof param === 'string');
    if (stack) fields['stack'] = stack;

    if (message instanceof Error) {
      this.logger[effective]({ ...fields, err: message }, message.message);
    } else if (typeof message === 'object' && message !== null) {
      const { msg, ...other } = message as Record<string, unknown>;
      this.logger[effective]({ ...fields, ...other }, typeof msg === 'string' ? msg : undefined);
    } else {
      this.logger[effective](fields, String(message));
    }
  }
}

/** The log levels an operator can choose (`--log-level`), most severe first. */
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];
