import { readFile } from 'node:fs/promises';
import { Agent, request } from 'node:https';
import { isIP } from 'node:net';
import { type PeerCertificate, checkServerIdentity } from 'node:tls';

/** Where and how the agent reads the kubelet's pod list. */
export interface KubeletClientOptions {
  /** The address dialled: the node name, or 127.0.0.1 without one (SPIRE's choice); `kubelet_host` overrides it. */
  readonly host: string;
  readonly port: number;
  /**
   * The name the kubelet's serving certificate must carry (the node name). Undefined: the chain is verified against
   * the CA but no name is checked, as SPIRE does when it has no node name and dials 127.0.0.1.
   */
  readonly serverName: string | undefined;
  /** PEM bundle of the CA the kubelet's certificate must chain to; unread when verification is skipped. */
  readonly caPath: string;
  /** `skip_kubelet_verification`: no certificate check at all (clusters whose kubelets serve self-signed certs). */
  readonly skipVerification: boolean;
  /** The agent's service account token, re-read for every request since the kubelet rotates it. */
  readonly tokenPath: string;
  /** The whole request, connection to the last byte. */
  readonly timeoutMs: number;
  /** A longer answer is refused. */
  readonly maxResponseBytes: number;
}

/** Why the pod list could not be read; the message never holds the token. */
export class KubeletError extends Error {
  override readonly name = 'KubeletError';
}

/** A bearer token: printable ASCII without spaces (RFC 6750 `b64token`, and what a JWT is). */
const BEARER_TOKEN = /^[\x21-\x7e]+$/;
const MAX_TOKEN_BYTES = 64 * 1024;
const MAX_CA_BYTES = 1024 * 1024;

function errorText(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = 'code' in error && typeof error.code === 'string' ? error.code : undefined;
  return code !== undefined && !error.message.includes(code) ? `${error.message} (${code})` : error.message;
}

/**
 * A client for the kubelet's read API on its secure port: `GET /pods` with the agent's service account token as
 * bearer token, the kubelet's certificate checked against `kubelet_ca_path` and the node name. Connections are kept
 * alive between requests; a new CA file builds a new connection pool.
 */
export class KubeletClient {
  private agent: Agent | undefined;
  private agentCa: string | undefined;

  constructor(private readonly options: KubeletClientOptions) {}

  /** `https://<host>:<port>/pods`, for messages. */
  get url(): string {
    const host = isIP(this.options.host) === 6 ? `[${this.options.host}]` : this.options.host;
    return `https://${host}:${this.options.port}/pods`;
  }

  /**
   * Reads the CA file (unless verification is skipped) and the token file, so that a misconfigured agent stops at
   * start with the path at fault.
   *
   * @throws KubeletError naming the file that cannot be used
   */
  async checkFiles(): Promise<void> {
    if (!this.options.skipVerification) await this.readCa();
    await this.readToken();
  }

  /**
   * The body of the kubelet's `/pods` answer.
   *
   * @throws KubeletError when the files cannot be read, the kubelet cannot be reached or verified, it answers
   *   anything but 200, the answer is too long or the time is up
   */
  async fetchPods(): Promise<string> {
    const agent = await this.currentAgent();
    const token = await this.readToken();
    const { host, port, timeoutMs, maxResponseBytes } = this.options;
    return new Promise<string>((resolve, reject) => {
      const fail = (message: string): void => {
        clearTimeout(timer);
        req.destroy();
        reject(new KubeletError(`kubelet ${this.url}: ${message}`));
      };
      const req = request(
        {
          host,
          port,
          path: '/pods',
          method: 'GET',
          agent,
          headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
        },
        (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            return fail(`answered ${res.statusCode} ${res.statusMessage ?? ''}`.trimEnd() + statusHint(res.statusCode));
          }
          const declared = Number(res.headers['content-length']);
          if (Number.isFinite(declared) && declared > maxResponseBytes) {
            return fail(`the pod list is ${declared} bytes, over the limit of ${maxResponseBytes}`);
          }
          const chunks: Buffer[] = [];
          let length = 0;
          res.on('data', (chunk: Buffer) => {
            length += chunk.length;
            if (length > maxResponseBytes) return fail(`the pod list is over the limit of ${maxResponseBytes} bytes`);
            chunks.push(chunk);
          });
          res.on('end', () => {
            clearTimeout(timer);
            resolve(Buffer.concat(chunks, length).toString('utf8'));
          });
          res.on('error', (error) => fail(`reading the answer failed: ${errorText(error)}`));
        },
      );
      const timer = setTimeout(() => fail(`no complete answer within ${timeoutMs} ms`), timeoutMs);
      req.on('error', (error) => fail(errorText(error)));
      req.end();
    });
  }

  /** Closes the kept-alive connections. */
  close(): void {
    this.agent?.destroy();
    this.agent = undefined;
    this.agentCa = undefined;
  }

  private async currentAgent(): Promise<Agent> {
    const { skipVerification, serverName } = this.options;
    const ca = skipVerification ? undefined : await this.readCa();
    if (this.agent !== undefined && this.agentCa === ca) return this.agent;
    this.agent?.destroy();
    const verifyName =
      serverName === undefined
        ? () => undefined
        : (_host: string, cert: PeerCertificate) => checkServerIdentity(serverName, cert);
    this.agent = new Agent({
      keepAlive: true,
      maxSockets: 2,
      rejectUnauthorized: !skipVerification,
      ...(ca === undefined ? {} : { ca }),
      // SNI carries a host name, never an IP address (RFC 6066).
      ...(serverName !== undefined && isIP(serverName) === 0 ? { servername: serverName } : {}),
      checkServerIdentity: verifyName,
    });
    this.agentCa = ca;
    return this.agent;
  }

  private async readCa(): Promise<string> {
    const { caPath } = this.options;
    const ca = await readFile(caPath, 'utf8').catch((error: unknown) => {
      throw new KubeletError(`kubelet_ca_path ${caPath}: cannot be read: ${errorText(error)}`);
    });
    if (ca.length > MAX_CA_BYTES || !ca.includes('-----BEGIN CERTIFICATE-----')) {
      throw new KubeletError(`kubelet_ca_path ${caPath}: must hold PEM certificates (at most ${MAX_CA_BYTES} bytes)`);
    }
    return ca;
  }

  private async readToken(): Promise<string> {
    const { tokenPath } = this.options;
    const content = await readFile(tokenPath, 'utf8').catch((error: unknown) => {
      throw new KubeletError(`token_path ${tokenPath}: cannot be read: ${errorText(error)}`);
    });
    const token = content.trim();
    // The token itself never goes into a message.
    if (token.length > MAX_TOKEN_BYTES || !BEARER_TOKEN.test(token)) {
      throw new KubeletError(
        `token_path ${tokenPath}: must hold one bearer token (printable ASCII without spaces, at most ` +
          `${MAX_TOKEN_BYTES} bytes)`,
      );
    }
    return token;
  }
}

function statusHint(status: number | undefined): string {
  if (status === 401) return ' (the service account token was refused)';
  if (status === 403) return ' (the service account may not read nodes/proxy)';
  return '';
}
