import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type LogLevelControl, LogLevelError, toLoggerLevelsBody } from '@sigil/logging';
import { listenOnPrivateSocket, prepareSocketDirectory } from '@sigil/runtime';

/** Largest request body read: `{"level": "…"}` is a few dozen bytes. */
const MAX_BODY_BYTES = 1024;

type Answer = { status: number; body: unknown };

const problem = (status: number, error: string, message: string): Answer => ({ status, body: { error, message } });

/**
 * The agent's admin socket (SPIRE's `admin_socket_path`; off unless configured): `/v1/logger` as on the server
 * (`GET`, `PUT {"level"}`, `DELETE` = reset to the launch level), JSON over HTTP on a Unix socket that only the
 * agent's user reaches (0600 in a 0700 directory, the directory chain checked as the server's admin socket's). It is
 * never the Workload API socket: the configuration refuses a path in that socket's directory.
 */
export class AgentAdminServer {
  private server: Server | undefined;

  constructor(
    readonly socketPath: string,
    private readonly levels: LogLevelControl,
  ) {}

  /** Creates or checks the socket's directory (before the agent attests, so a bad one costs no join token). */
  async prepare(): Promise<void> {
    await prepareSocketDirectory(this.socketPath, { directoryMode: 0o700 });
  }

  async start(): Promise<void> {
    const server = createServer({ headersTimeout: 10_000, requestTimeout: 10_000 }, (request, response) => {
      void this.handle(request).then(
        (answer) => send(response, answer),
        (error: unknown) => send(response, problem(500, 'internal', (error as Error).message)),
      );
    });
    await listenOnPrivateSocket(server, this.socketPath, 'admin socket', 'sigil-agent');
    this.server = server;
  }

  /** Stops accepting, lets in-flight requests finish; Node removes the socket file. */
  async stop(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    await closed;
  }

  private async handle(request: IncomingMessage): Promise<Answer> {
    const path = (request.url ?? '').split('?')[0];
    if (path !== '/v1/logger') return problem(404, 'not_found', `no route ${request.method} ${path}`);
    switch (request.method) {
      case 'GET':
        return { status: 200, body: toLoggerLevelsBody(this.levels.get()) };
      case 'DELETE':
        return { status: 200, body: toLoggerLevelsBody(this.levels.reset()) };
      case 'PUT': {
        const body = await readJson(request);
        if ('status' in body) return body;
        const keys = Object.keys(body.value);
        const unknown = keys.find((key) => key !== 'level');
        if (unknown !== undefined) return problem(400, 'invalid_argument', `${unknown}: unknown field`);
        try {
          return { status: 200, body: toLoggerLevelsBody(this.levels.set(body.value['level'])) };
        } catch (error) {
          if (error instanceof LogLevelError) return problem(400, 'invalid_argument', error.message);
          throw error;
        }
      }
      default:
        return problem(405, 'invalid_argument', `${request.method} is not allowed on /v1/logger (GET, PUT, DELETE)`);
    }
  }
}

/** The request's JSON object body, or the answer that refuses it. */
async function readJson(request: IncomingMessage): Promise<{ value: Record<string, unknown> } | Answer> {
  if (!String(request.headers['content-type'] ?? '').startsWith('application/json')) {
    request.resume();
    return problem(415, 'invalid_argument', 'body: content-type must be application/json');
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return problem(413, 'invalid_argument', `body: at most ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    return problem(400, 'invalid_argument', 'body: must be JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return problem(400, 'invalid_argument', 'body: must be a JSON object');
  }
  return { value: value as Record<string, unknown> };
}

function send(response: ServerResponse, answer: Answer): void {
  response.writeHead(answer.status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  response.end(JSON.stringify(answer.body));
}
