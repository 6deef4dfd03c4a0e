import { request as httpRequest } from 'node:http';
import { Command, Option } from 'commander';
import { CliError, printResult, recordTable } from './cli.js';

/**
 * The admin CLI's side of a local admin socket, for both services: the HTTP client, and the `logger get|set|reset`
 * commands (SPIRE's, on `spire-server` and `spire-agent` alike).
 */

export interface AdminResponse {
  status: number;
  contentType: string;
  body: unknown;
  text: string;
}

const REQUEST_TIMEOUT_MS = 30_000;

/**
 * Talks HTTP to a service over its local admin Unix socket (trusted by file permissions, no token needed): the
 * server's (`sigil-server` admin commands) or the agent's (`sigil-agent logger`).
 */
export class AdminClient {
  /** @param service what the CLI talks to, in its errors (`the server at /path is not running?`) */
  constructor(
    readonly socketPath: string,
    readonly service: 'server' | 'agent' = 'server',
  ) {}

  /** Sends a request; a non-2xx answer becomes a {@link CliError} carrying the server's message. */
  async call(method: string, path: string, body?: unknown): Promise<AdminResponse> {
    const response = await this.send(method, path, body);
    if (response.status >= 200 && response.status < 300) return response;
    const error = response.body as { error?: unknown; message?: unknown } | undefined;
    throw new CliError(
      typeof error?.message === 'string' ? error.message : `the ${this.service} answered ${response.status}`,
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
                return reject(new CliError(`the ${this.service} sent malformed JSON (${res.statusCode})`));
              }
            }
            resolve({ status: res.statusCode ?? 0, contentType, body: parsed, text });
          });
        },
      );
      req.on('timeout', () =>
        req.destroy(
          new CliError(`no answer from the ${this.service} at ${this.socketPath} within 30 s`, 1, 'unavailable'),
        ),
      );
      req.on('error', (error: NodeJS.ErrnoException) => {
        if (error instanceof CliError) return reject(error);
        if (error.code === 'EACCES') {
          return reject(
            new CliError(
              `cannot reach the ${this.service} at ${this.socketPath}: permission denied (run as the user that runs the ${this.service})`,
              1,
              'permission_denied',
            ),
          );
        }
        reject(
          new CliError(`cannot reach the ${this.service} at ${this.socketPath}: is it running?`, 1, 'unavailable'),
        );
      });
      req.end(payload);
    });
  }
}

/** `/v1/logger`'s answer on either service. */
interface LoggerLevels {
  current_level: string;
  launch_level: string;
}

/** What `logger` needs of the CLI it joins: the options every subcommand takes, and how to reach the service. */
export interface LoggerCommandOptions<O extends { output: 'text' | 'json' }> {
  readonly service: 'server' | 'agent';
  /** The accepted level names (`LOG_LEVELS`). */
  readonly levels: readonly string[];
  /** Adds the socket and `--output` options to a subcommand. */
  readonly withOptions: (command: Command) => Command;
  readonly client: (options: O) => AdminClient;
}

/** `<service> logger get|set|reset` (SPIRE's): the running service's log level, changed in memory only. */
export function loggerCommand<O extends { output: 'text' | 'json' }>(spec: LoggerCommandOptions<O>): Command {
  const show = async (options: O, method: string, body?: unknown): Promise<void> => {
    const { body: levels } = await spec.client(options).call(method, '/v1/logger', body);
    printResult(options.output === 'json', levels, () =>
      recordTable([
        ['Logger Level', (levels as LoggerLevels).current_level],
        ['Launch Level', (levels as LoggerLevels).launch_level],
      ]),
    );
  };
  const get = spec
    .withOptions(new Command('get'))
    .description(`show the ${spec.service}'s current and launch log levels`)
    .action((options: O) => show(options, 'GET'));
  const set = spec
    .withOptions(new Command('set'))
    .description(`set the ${spec.service}'s log level until it restarts (or logger reset)`)
    .addOption(new Option('--level <level>', 'the new log level').choices(spec.levels).makeOptionMandatory())
    .action((options: O & { level: string }) => show(options, 'PUT', { level: options.level }));
  const reset = spec
    .withOptions(new Command('reset'))
    .description(`set the ${spec.service}'s log level back to the launch level`)
    .action((options: O) => show(options, 'DELETE'));
  return new Command('logger')
    .description(`get or change the running ${spec.service}'s log level (in memory only)`)
    .addCommand(get)
    .addCommand(set)
    .addCommand(reset);
}
