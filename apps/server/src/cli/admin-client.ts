import { request as httpRequest } from 'node:http';
import { type Command, Option } from 'commander';
import { CliError, printResult } from '@sigil/runtime';
import { DEFAULT_ADMIN_SOCKET } from '../config.js';

export { CliError, collect, collectSelector, durationFlag, integerFlag, recordTable as table } from '@sigil/runtime';

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
    const error = response.body as { error?: unknown; message?: unknown } | undefined;
    throw new CliError(
      typeof error?.message === 'string' ? error.message : `server answered ${response.status}`,
      1,
      typeof error?.error === 'string' ? error.error : 'unknown',
    );
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
      req.on('timeout', () =>
        req.destroy(new CliError(`no answer from the server at ${this.socketPath} within 30 s`, 1, 'unavailable')),
      );
      req.on('error', (error: NodeJS.ErrnoException) => {
        if (error instanceof CliError) return reject(error);
        if (error.code === 'EACCES') {
          return reject(
            new CliError(
              `cannot reach the server at ${this.socketPath}: permission denied (run as the user that runs the server)`,
              1,
              'permission_denied',
            ),
          );
        }
        reject(new CliError(`cannot reach the server at ${this.socketPath}: is it running?`, 1, 'unavailable'));
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

/** Prints data as JSON (`--output json`) or as the text `render` gives. */
export function print(options: AdminOptions, data: unknown, render: () => string): void {
  printResult(options.output === 'json', data, render);
}
