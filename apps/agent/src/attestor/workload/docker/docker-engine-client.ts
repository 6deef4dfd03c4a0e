import { request } from 'node:http';

/**
 * A small, bounded client of the Docker Engine API on its Unix socket: `GET /_ping` (to learn the daemon's API
 * version, as Docker's own clients negotiate it) and `GET /v<version>/containers/{id}/json` (ContainerInspect).
 * Every request has a deadline, a response size cap and the caller's abort signal; nothing is kept between calls
 * but the negotiated API version.
 */

/** What the attestor reads of a ContainerInspectResponse (Docker Engine API reference); the rest is ignored. */
export interface ContainerInspect {
  /** The container's full ID. */
  readonly Id: string;
  /** The ID of the image the container was created from (`sha256:…`). */
  readonly Image?: string;
  readonly Config?: {
    /** The image reference the container was created with (`nginx:1.27`, `registry/app@sha256:…`). */
    readonly Image?: string;
    readonly Labels?: Readonly<Record<string, string>> | null;
    /** `NAME=value` strings. */
    readonly Env?: readonly string[] | null;
  } | null;
}

/** The Docker Engine could not be asked, or answered something other than the reference describes. */
export class DockerEngineError extends Error {
  override readonly name = 'DockerEngineError';
}

export interface DockerEngineClientOptions {
  /** Absolute path of the daemon's Unix socket. */
  readonly socketPath: string;
  /** How the socket is named in messages (`unix:///var/run/docker.sock`). */
  readonly socketName: string;
  /** A fixed API version (`1.44`); negotiated with `/_ping` when absent. */
  readonly apiVersion?: string;
  /** Deadline of one request. */
  readonly timeoutMs: number;
  /** Largest response body read (default 4 MiB: an inspect response is a few KiB, more with many mounts). */
  readonly maxResponseBytes?: number;
}

/** An API version as the daemon writes it in its `API-Version` header and paths take it. */
export const DOCKER_API_VERSION = /^1\.\d{1,3}$/;

const DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
const CONTAINER_ID = /^[0-9a-f]{64}$/;

interface Answer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: Buffer;
}

export class DockerEngineClient {
  private negotiated: string | undefined;
  private readonly maxResponseBytes: number;

  constructor(private readonly options: DockerEngineClientOptions) {
    this.maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  }

  /**
   * The container with this full ID, or undefined when the daemon has none (404, or its answer is another
   * container: Docker also resolves names and ID prefixes, and a container may be *named* like another runtime's
   * container ID).
   *
   * @throws DockerEngineError when the daemon cannot be reached, does not answer in time, or answers an error
   */
  async inspectContainer(containerId: string, signal: AbortSignal): Promise<ContainerInspect | undefined> {
    if (!CONTAINER_ID.test(containerId)) throw new DockerEngineError(`not a container ID: ${containerId}`);
    const version = await this.apiVersion(signal);
    const answer = await this.get(`/v${version}/containers/${containerId}/json`, signal);
    if (answer.status === 404) return undefined;
    if (answer.status !== 200) throw this.errorOf(answer, `inspecting container ${containerId}`);
    const inspect = parseJson(answer.body);
    if (!isContainerInspect(inspect)) {
      throw new DockerEngineError(
        `the Docker Engine at ${this.options.socketName} answered an inspect of container ${containerId} with ` +
          'a body that is not a container (Id, Config.Labels, Config.Env of the API reference)',
      );
    }
    return inspect.Id === containerId ? inspect : undefined;
  }

  /** The configured API version, else the one the daemon's `/_ping` names (asked once, again after a failure). */
  private async apiVersion(signal: AbortSignal): Promise<string> {
    if (this.options.apiVersion !== undefined) return this.options.apiVersion;
    if (this.negotiated !== undefined) return this.negotiated;
    const answer = await this.get('/_ping', signal);
    if (answer.status !== 200) throw this.errorOf(answer, 'asking its API version (/_ping)');
    const header = answer.headers['api-version'];
    if (typeof header !== 'string' || !DOCKER_API_VERSION.test(header)) {
      throw new DockerEngineError(
        `the Docker Engine at ${this.options.socketName} answered /_ping without an API-Version header of the form 1.N`,
      );
    }
    this.negotiated = header;
    return header;
  }

  private errorOf(answer: Answer, doing: string): DockerEngineError {
    const body = parseJson(answer.body);
    const said =
      typeof body === 'object' && body !== null && typeof (body as { message?: unknown }).message === 'string'
        ? `: ${printable((body as { message: string }).message)}`
        : '';
    // A daemon upgraded or downgraded under us may refuse the version learnt before: learn it again next time.
    this.negotiated = undefined;
    return new DockerEngineError(
      `the Docker Engine at ${this.options.socketName} answered ${answer.status} ${doing}${said}`,
    );
  }

  private get(path: string, signal: AbortSignal): Promise<Answer> {
    signal.throwIfAborted();
    const { socketPath, socketName, timeoutMs } = this.options;
    const timeout = AbortSignal.timeout(timeoutMs);
    return new Promise<Answer>((resolve, reject) => {
      const fail = (error: Error): void => {
        this.negotiated = undefined;
        if (signal.aborted) return reject(signal.reason);
        if (timeout.aborted) {
          return reject(
            new DockerEngineError(`the Docker Engine at ${socketName} did not answer within ${timeoutMs}ms`),
          );
        }
        if (error instanceof DockerEngineError) return reject(error);
        const code = (error as NodeJS.ErrnoException).code ?? error.message;
        reject(new DockerEngineError(`cannot reach the Docker Engine at ${socketName}: ${code}`, { cause: error }));
      };
      const call = request(
        {
          socketPath,
          path,
          method: 'GET',
          headers: { host: 'docker', accept: 'application/json' },
          signal: AbortSignal.any([signal, timeout]),
          agent: false,
        },
        (response) => {
          const chunks: Buffer[] = [];
          let size = 0;
          response.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > this.maxResponseBytes) {
              call.destroy(
                new DockerEngineError(
                  `the Docker Engine at ${socketName} answered ${path} with more than ${this.maxResponseBytes} bytes`,
                ),
              );
              return;
            }
            chunks.push(chunk);
          });
          response.on('error', fail);
          response.on('end', () =>
            resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }),
          );
        },
      );
      call.on('error', fail);
      call.end();
    });
  }
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** At most 200 printable characters of a daemon's message, for an error of ours. */
function printable(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 200 ? `${clean.slice(0, 200)}…` : clean;
}

function isStringRecord(value: unknown): value is Record<string, string> {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    Object.values(value).every((item) => typeof item === 'string')
  );
}

function isContainerInspect(value: unknown): value is ContainerInspect {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const inspect = value as Record<string, unknown>;
  if (typeof inspect['Id'] !== 'string') return false;
  if (inspect['Image'] !== undefined && typeof inspect['Image'] !== 'string') return false;
  const config = inspect['Config'];
  if (config === undefined || config === null) return true;
  if (typeof config !== 'object' || Array.isArray(config)) return false;
  const { Image: image, Labels: labels, Env: env } = config as Record<string, unknown>;
  if (image !== undefined && typeof image !== 'string') return false;
  if (labels !== undefined && labels !== null && !isStringRecord(labels)) return false;
  if (env !== undefined && env !== null && !(Array.isArray(env) && env.every((item) => typeof item === 'string'))) {
    return false;
  }
  return true;
}
