import { request as httpRequest } from 'node:http';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { DurationError, SelectorError, durationSecondsWithin, parseSelector, type Selector } from '@sigil/runtime';
import { DEFAULT_ADMIN_SOCKET } from '../config.js';

/** A failure the CLI reports as one line, `Error: <message>`, exiting non-zero. */
export class CliError extends Error {
  override readonly name = 'CliError';
}

export interface AdminResponse {
  status: number;
  contentType: string;
  body: unknown;
  text: string;
}

const REQUEST_TIMEOUT_MS = 30_000;

/** Talks HTTP to the server over its local admin Unix socket (trusted by file permissions, no token needed). */
export class AdminClient {
  constructor(readonly socketPath: string) {}

  /** Sends a request; a non-2xx answer becomes a {@link CliError} carrying the server's message. */
  async call(method: string, path: string, body?: unknown): Promise<AdminResponse> {
    const response = await this.send(method, path, body);
    if (response.status >= 200 && response.status < 300) return response;
    const error = response.body as { message?: unknown } | undefined;
    throw new CliError(typeof error?.message === 'string' ? error.message : `server answered ${response.status}`);
  }

  private send(method: string, path: string, body?: unknown): Promise<AdminResponse> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        {
          socketPath: this.socketPath,
          method,
          path,
          timeout: REQUEST_TIMEOUT_MS,
          headers: payload === undefined ? {} : { 'content-type': 'application/json' },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const contentType = String(res.headers['content-type'] ?? '');
            let parsed: unknown = undefined;
            if (contentType.includes('json') && text.length > 0) {
              try {
                parsed = JSON.parse(text);
              } catch {
                return reject(new CliError(`server sent malformed JSON (${res.statusCode})`));
              }
            }
            resolve({ status: res.statusCode ?? 0, contentType, body: parsed, text });
          });
        },
      );
      req.on('timeout', () => req.destroy(new CliError(`no answer from the server at ${this.socketPath} within 30 s`)));
      req.on('error', (error: NodeJS.ErrnoException) => {
        if (error instanceof CliError) return reject(error);
        if (error.code === 'EACCES') {
          return reject(
            new CliError(
              `cannot reach the server at ${this.socketPath}: permission denied (run as the user that runs the server)`,
            ),
          );
        }
        reject(new CliError(`cannot reach the server at ${this.socketPath}: is it running?`));
      });
      req.end(payload);
    });
  }
}

export type OutputFormat = 'text' | 'json';

/** Options every admin subcommand shares. */
export interface AdminOptions {
  adminSocket: string;
  output: OutputFormat;
}

/** Adds `--admin-socket` (default as the server's, or `SIGIL_ADMIN_SOCKET`) and `--output`. */
export function withAdminOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--admin-socket <path>', 'local admin socket of the server')
        .env('SIGIL_ADMIN_SOCKET')
        .default(DEFAULT_ADMIN_SOCKET),
    )
    .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'));
}

/** Prints data as JSON or as the text `render` gives. */
export function print(options: AdminOptions, data: unknown, render: () => string): void {
  process.stdout.write(options.output === 'json' ? `${JSON.stringify(data, null, 2)}\n` : `${render()}\n`);
}

/** Aligned `Label : value` lines, as SPIRE's CLI prints records. */
export function table(rows: readonly (readonly [string, string])[]): string {
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `${label.padEnd(width)} : ${value}`).join('\n');
}

/** Parses a whole-number flag; commander reports a bad value naming the flag. */
export function integerFlag(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string) => {
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
    }
    return Number(value);
  };
}

/** Longest duration a CLI flag takes by default: ten years (the server checks each field's own bounds). */
const MAX_DURATION_FLAG_SECONDS = 10 * 365 * 24 * 3600;

/** Parses a duration flag (`90s`, `15m`, `1h30m`, or bare seconds) into whole seconds within bounds. */
export function durationFlag(minSeconds: number, maxSeconds = MAX_DURATION_FLAG_SECONDS): (value: string) => number {
  return (value: string) => {
    try {
      return durationSecondsWithin(value, minSeconds, maxSeconds);
    } catch (error) {
      if (error instanceof DurationError) throw new InvalidArgumentError(error.message);
      throw error;
    }
  };
}

/** Collects a repeatable `type:value` selector flag, each checked by the selector rules. */
export function collectSelector(value: string, previous: Selector[] = []): Selector[] {
  try {
    return [...previous, parseSelector(value)];
  } catch (error) {
    if (error instanceof SelectorError) throw new InvalidArgumentError(error.message);
    throw error;
  }
}

/** Collects a repeatable flag's values. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
