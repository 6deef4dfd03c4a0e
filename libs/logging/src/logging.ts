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

/** How log lines are written (`--log-format`): JSON objects (the default), or text for a person at a terminal. */
export type LogFormat = 'json' | 'text';
export const LOG_FORMATS: readonly LogFormat[] = ['json', 'text'];

export interface JsonLoggerOptions {
  /** The `service` field of every line, e.g. `sigil-server`. */
  service: string;
  level: LevelWithSilent;
  /** `json` (default) or `text`; both carry the same fields, after the same redaction. */
  format?: LogFormat;
  /** Append to this file (created 0600 when missing) instead of stdout (`--log-file`). */
  file?: string;
  /** Where lines go; stdout (or `file`) by default. Tests pass a stream to capture them. */
  destination?: DestinationStream;
}

const TEXT_LEVELS: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};

function textValue(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return /^[^\s"=]*$/.test(text) && text !== '' ? text : JSON.stringify(text);
}

/**
 * One JSON line (already redacted by pino) as text: `TIME LEVEL [context] message key=value …`, values quoted when
 * they hold spaces, quotes or `=`, so a line stays one line and its fields stay apart.
 */
export function formatTextLine(line: string): string {
  let fields: Record<string, unknown>;
  try {
    fields = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const { time, level, msg, context, service: _service, ...rest } = fields;
  const head = [String(time), (TEXT_LEVELS[level as number] ?? String(level)).padEnd(5)];
  if (typeof context === 'string') head.push(`[${context}]`);
  if (msg !== undefined) head.push(String(msg));
  const tail = Object.entries(rest).map(([key, value]) => `${key}=${textValue(value)}`);
  return `${[...head, ...tail].join(' ')}\n`;
}

/** Writes each JSON line pino produces as text to `target`. */
function textDestination(target: DestinationStream): DestinationStream {
  return { write: (line: string) => target.write(formatTextLine(line)) };
}

/** A process's root logger: JSON (or text) lines with ISO times, secrets redacted. */
export function createJsonLogger(options: JsonLoggerOptions): Logger {
  const target =
    options.destination ??
    (options.file === undefined
      ? pino.destination({ dest: 1, sync: true })
      : pino.destination({ dest: options.file, sync: true, append: true, mode: 0o600 }));
  return pino(
    {
      level: options.level,
      base: { service: options.service },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      serializers: { err: pino.stdSerializers.errWithCause },
    },
    options.format === 'text' ? textDestination(target) : target,
  );
}

/** Where and how a process's log lines go: `--log-format` (default json) and `--log-file` (default stdout). */
export interface LogOutput {
  readonly logFormat?: LogFormat;
  readonly logFile?: string;
}

/**
 * The root logger of one of Sigil's processes (`service`: `sigil-server`, `sigil-agent`) at `level`, with the
 * configured format and file; `destination` lets tests capture the lines.
 */
export function createServiceLogger(
  service: string,
  level: LevelWithSilent,
  destination?: DestinationStream,
  output: LogOutput = {},
): Logger {
  return createJsonLogger({
    service,
    level,
    ...(output.logFormat && { format: output.logFormat }),
    ...(output.logFile !== undefined && { file: output.logFile }),
    ...(destination && { destination }),
  });
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

/**
 * A logger bound to one context (a class name), written through the process's {@link PinoLoggerService}: the
 * agent's replacement for Nest's `new Logger(Context)`, with the same call shape (`log`, `warn`, `error`, `debug`,
 * `verbose`, `fatal`; Nest's rule of passing the context as the last parameter), so one adapter serves both apps.
 * The agent does not load @nestjs/common for it: that package and what it brings (rxjs, iterare, …) cost the idle
 * agent ~30 MiB of RSS (bench/README.md, issue 13). Before {@link ContextLogger.use} names the process's sink, lines
 * go to a JSON logger on stdout at `info`, with the same redaction.
 */
export class ContextLogger {
  private static sink: LoggerService | undefined;

  constructor(readonly context: string) {}

  /** Where every ContextLogger of this process writes from now on (the agent's root logger, adapted). */
  static use(sink: LoggerService): void {
    ContextLogger.sink = sink;
  }

  private static current(): LoggerService {
    ContextLogger.sink ??= new PinoLoggerService(createJsonLogger({ service: 'sigil', level: 'info' }));
    return ContextLogger.sink;
  }

  log(message: unknown, ...params: unknown[]): void {
    ContextLogger.current().log(message, ...params, this.context);
  }

  /** Nest's shape: `error(message, stack?)`; with no parameter an `undefined` holds the stack's place. */
  error(message: unknown, ...params: unknown[]): void {
    ContextLogger.current().error(message, ...(params.length ? params : [undefined]), this.context);
  }

  warn(message: unknown, ...params: unknown[]): void {
    ContextLogger.current().warn(message, ...params, this.context);
  }

  debug(message: unknown, ...params: unknown[]): void {
    ContextLogger.current().debug?.(message, ...params, this.context);
  }

  verbose(message: unknown, ...params: unknown[]): void {
    ContextLogger.current().verbose?.(message, ...params, this.context);
  }

  fatal(message: unknown, ...params: unknown[]): void {
    ContextLogger.current().fatal?.(message, ...params, this.context);
  }
}
