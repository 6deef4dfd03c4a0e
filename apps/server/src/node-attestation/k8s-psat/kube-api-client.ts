import { Agent, request } from 'node:https';
import type { KubeConnection } from './kube-config.js';

/** Bounds of one call to the Kubernetes API. */
export interface KubeApiLimits {
  /** Whole call: connect, TLS, request, answer. */
  readonly timeoutMs: number;
  /** Largest answer body read; a larger one fails the call. */
  readonly maxResponseBytes: number;
  /** Connections open at once to the API server. */
  readonly maxSockets: number;
}

export const KUBE_API_LIMITS: KubeApiLimits = Object.freeze({
  timeoutMs: 10_000,
  // A node object lists its images and can reach a few hundred KB; pods are smaller.
  maxResponseBytes: 4 * 1024 * 1024,
  maxSockets: 16,
});

/**
 * The Kubernetes API could not answer the question: unreachable, timed out, an error status, or an answer that is
 * not what the API returns. `status` is the HTTP status when there was one; `detail` is for the server's log only
 * (the API server's own message, the address it could not reach).
 */
export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';

  constructor(
    message: string,
    readonly detail: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** `status` of a TokenReview (authentication.k8s.io/v1), the fields this server reads. */
export interface TokenReviewStatus {
  readonly authenticated: boolean;
  readonly error: string | undefined;
  readonly audiences: readonly string[];
  readonly user: {
    readonly username: string | undefined;
    readonly extra: Readonly<Record<string, readonly string[]>>;
  };
}

/** The fields of a Pod (core/v1) this server reads. */
export interface KubePod {
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly nodeName: string | undefined;
  readonly hostIp: string | undefined;
}

/** The fields of a Node (core/v1) this server reads. */
export interface KubeNode {
  readonly uid: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const stringMap = (value: unknown): Record<string, string> =>
  isObject(value)
    ? Object.fromEntries(
        Object.entries(value).filter((entry): entry is [string, string] => typeof entry[1] === 'string'),
      )
    : {};

const optionalString = (value: unknown): string | undefined =>
  typeof value === 'string' && value !== '' ? value : undefined;

/**
 * A small Kubernetes API client over node:https: the three calls node attestation needs, each bounded in time and
 * answer size, authenticated with the connection's credentials (bearer token or client certificate) and checking the
 * API server's certificate against the connection's CA. Nothing it logs or throws holds a token: a TokenReview
 * answer echoes the reviewed token in `spec.token`, so answer bodies never leave this class.
 */
export class KubeApiClient {
  private readonly agent: Agent;

  constructor(
    private readonly connection: KubeConnection,
    private readonly limits: KubeApiLimits = KUBE_API_LIMITS,
  ) {
    this.agent = new Agent({
      keepAlive: true,
      maxSockets: limits.maxSockets,
      ...(connection.ca !== undefined && { ca: connection.ca }),
      ...(connection.clientCertificate !== undefined && {
        cert: connection.clientCertificate.certificate,
        key: connection.clientCertificate.key,
      }),
      rejectUnauthorized: !connection.insecureSkipTlsVerify,
      ...(connection.tlsServerName !== undefined && { servername: connection.tlsServerName }),
    });
  }

  /** The API server this client talks to, for logs. */
  get server(): string {
    return this.connection.server.origin;
  }

  /**
   * `POST /apis/authentication.k8s.io/v1/tokenreviews`: asks the API server whose token `token` is, for `audiences`.
   *
   * @throws KubeApiError when the API does not answer with a TokenReview
   */
  async reviewToken(token: string, audiences: readonly string[]): Promise<TokenReviewStatus> {
    const path = '/apis/authentication.k8s.io/v1/tokenreviews';
    const review = {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, audiences },
    };
    const body = await this.call('POST', path, review, 'TokenReview');
    if (body === undefined) throw new KubeApiError(`POST ${path}: answered 404 Not Found`, 'not found', 404);
    const status = isObject(body['status']) ? body['status'] : {};
    const user = isObject(status['user']) ? status['user'] : {};
    const extra: Record<string, readonly string[]> = {};
    if (isObject(user['extra'])) {
      for (const [key, values] of Object.entries(user['extra'])) {
        if (Array.isArray(values)) extra[key] = values.filter((value): value is string => typeof value === 'string');
      }
    }
    return {
      authenticated: status['authenticated'] === true,
      error: optionalString(status['error']),
      audiences: Array.isArray(status['audiences'])
        ? status['audiences'].filter((value): value is string => typeof value === 'string')
        : [],
      user: { username: optionalString(user['username']), extra },
    };
  }

  /**
   * `GET /api/v1/namespaces/<namespace>/pods/<name>`; undefined when there is no such pod.
   *
   * @throws KubeApiError when the API does not answer with the pod or a 404
   */
  async getPod(namespace: string, name: string): Promise<KubePod | undefined> {
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
    const body = await this.call('GET', path, undefined, 'Pod');
    if (body === undefined) return undefined;
    const metadata = this.metadataOf(body, 'GET', path);
    const spec = isObject(body['spec']) ? body['spec'] : {};
    const status = isObject(body['status']) ? body['status'] : {};
    return {
      ...metadata,
      namespace: optionalString(isObject(body['metadata']) ? body['metadata']['namespace'] : undefined) ?? namespace,
      nodeName: optionalString(spec['nodeName']),
      hostIp: optionalString(status['hostIP']),
    };
  }

  /**
   * `GET /api/v1/nodes/<name>`; undefined when there is no such node.
   *
   * @throws KubeApiError when the API does not answer with the node or a 404
   */
  async getNode(name: string): Promise<KubeNode | undefined> {
    const path = `/api/v1/nodes/${encodeURIComponent(name)}`;
    const body = await this.call('GET', path, undefined, 'Node');
    return body === undefined ? undefined : this.metadataOf(body, 'GET', path);
  }

  close(): void {
    this.agent.destroy();
  }

  private metadataOf(
    body: Json,
    method: string,
    path: string,
  ): { uid: string; name: string; labels: Record<string, string> } {
    const metadata = isObject(body['metadata']) ? body['metadata'] : {};
    const uid = optionalString(metadata['uid']);
    const name = optionalString(metadata['name']);
    if (uid === undefined || name === undefined) {
      throw new KubeApiError(`${method} ${path}: answer has no metadata.uid or metadata.name`, 'incomplete object');
    }
    return { uid, name, labels: stringMap(metadata['labels']) };
  }

  /**
   * One call: the parsed object of kind `kind` for a 200 or 201, undefined for a 404.
   *
   * @throws KubeApiError for anything else
   */
  private async call(method: 'GET' | 'POST', path: string, payload: unknown, kind: string): Promise<Json | undefined> {
    const where = `${method} ${path}`;
    const headers: Record<string, string> = { accept: 'application/json' };
    let bearer: string | undefined;
    try {
      bearer = await this.connection.bearerToken?.();
    } catch (error) {
      throw new KubeApiError(`${where}: the server's own credentials cannot be read`, (error as Error).message);
    }
    if (bearer !== undefined) headers['authorization'] = `Bearer ${bearer}`;
    const data = payload === undefined ? undefined : Buffer.from(JSON.stringify(payload), 'utf8');
    if (data !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(data.length);
    }
    const { status, text } = await this.send(method, path, headers, data, where);
    if (status === 404) return undefined;
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      // No excerpt: a TokenReview answer echoes the token it was given.
      throw new KubeApiError(
        `${where}: answered ${status} with a body that is not JSON`,
        `${text.length} characters`,
        status,
      );
    }
    if (status !== 200 && status !== 201) {
      // A Status object (meta/v1): its reason and message say what went wrong (RBAC, authentication).
      const reason = isObject(body) ? optionalString(body['reason']) : undefined;
      const message = isObject(body) ? optionalString(body['message']) : undefined;
      throw new KubeApiError(
        `${where}: answered ${status}${reason ? ` ${reason}` : ''}`,
        message === undefined ? 'no message' : sanitizeReason(message, secretOf(payload)),
        status,
      );
    }
    if (!isObject(body) || body['kind'] !== kind) {
      throw new KubeApiError(
        `${where}: answered ${status} without a ${kind}`,
        `kind ${String(isObject(body) ? body['kind'] : typeof body)}`,
        status,
      );
    }
    return body;
  }

  private send(
    method: string,
    path: string,
    headers: Record<string, string>,
    data: Buffer | undefined,
    where: string,
  ): Promise<{ status: number; text: string }> {
    const { server } = this.connection;
    const url = new URL(server.pathname.replace(/\/$/, '') + path, server);
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (message: string, detail: string, cause?: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        call.destroy();
        reject(new KubeApiError(`${where}: ${message}`, detail, undefined, { cause }));
      };
      const call = request(url, { method, headers, agent: this.agent }, (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > this.limits.maxResponseBytes) {
            fail(`answer larger than ${this.limits.maxResponseBytes} bytes`, `from ${url.origin}`);
            return;
          }
          chunks.push(chunk);
        });
        response.on('error', (error) => fail('answer interrupted', String(error), error));
        response.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        });
      });
      const timer = setTimeout(
        () => fail(`no answer within ${this.limits.timeoutMs} ms`, `from ${url.origin}`),
        this.limits.timeoutMs,
      );
      call.on('error', (error: NodeJS.ErrnoException) =>
        fail(`unreachable (${error.code ?? error.message})`, `${url.origin}: ${error.message}`, error),
      );
      call.end(data);
    });
  }
}

const MAX_REASON_LENGTH = 300;

/**
 * The API server's reason, safe to hand to the caller and to log: without the token (in case an authenticator
 * echoes it), without anything shaped like a JWT, without control characters, and bounded.
 */
export function sanitizeReason(reason: string, token: string): string {
  let text = token.length >= 8 ? reason.split(token).join('<token>') : reason;
  // A JWT's header is base64url JSON, so it starts with `eyJ` (`{"`).
  text = text.replace(/eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g, '<jwt>');
  // eslint-disable-next-line no-control-regex
  text = text.replace(/[\u0000-\u001f\u007f]/g, ' ');
  return text.length > MAX_REASON_LENGTH ? `${text.slice(0, MAX_REASON_LENGTH)}…` : text;
}

/** The token a request carries (a TokenReview's `spec.token`), to be kept out of what its answer's errors say. */
function secretOf(payload: unknown): string {
  const spec = isObject(payload) ? payload['spec'] : undefined;
  const token = isObject(spec) ? spec['token'] : undefined;
  return typeof token === 'string' ? token : '';
}
