/**
 * The server's agent API as an agent calls it: join-token or x509pop attestation over TLS 1.3 for an agent X509-SVID,
 * then mTLS calls with that SVID over kept-alive connections. The server is authenticated by the trust bundle and its
 * SPIFFE ID (`spiffe://<td>/sigil/server`).
 */
import { type PeerCertificate } from 'node:tls';
import { Agent, request } from 'node:https';
import { AGENT_API_ROUTES, type AgentApiRoute, parseAttestationResponse, parseErrorBody } from '@sigil/agent-api';
import { createCsr, generateKeyPair, privateKeyToPem, toPem } from '@sigil/pki';
import { type NodeCertificate, answerX509popChallenge } from './x509pop.js';

/** An attested agent's identity: its SVID chain and key (PEM), to present as the TLS client certificate. */
export interface AgentCredentials {
  readonly spiffeId: string;
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

export interface AgentApiOptions {
  readonly port: number;
  readonly trustDomain: string;
  /** The server's CA certificates (PEM). */
  readonly bundlePem: string;
  /** The source address of every connection (a loopback address per simulated host, e.g. `127.0.3.7`). */
  readonly localAddress?: string;
}

interface HttpResult {
  readonly status: number;
  readonly text: string;
  readonly retryAfter: string | undefined;
}

/** A non-2xx answer of the agent API: its status, the server's message, and its `Retry-After` in seconds. */
export class AgentApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly retryAfterSeconds: number | undefined,
  ) {
    super(message);
    this.name = 'AgentApiError';
  }
}

const REQUEST_TIMEOUT_MS = 60_000;
const IDLE_CONNECTION_MS = 4_000;

export class AgentApiClient {
  private readonly agent: Agent;
  private readonly serverId: string;

  /** `connections`: most TLS connections kept open at once (one request at a time on each). */
  constructor(
    private readonly options: AgentApiOptions,
    credentials: AgentCredentials | undefined,
    connections: number,
  ) {
    this.serverId = `spiffe://${options.trustDomain}/sigil/server`;
    this.agent = new Agent({
      keepAlive: true,
      // A kept-alive connection idle this long is closed here, before the server's idle timeout (10 s) closes it:
      // otherwise a request sent as the server closes it meets a reset (ECONNRESET; 24 of the fleet's 1,000
      // long-polls in one bench:fleet run). sigil-agent closes its idle connections after 4 s too (tls-transport.ts).
      timeout: IDLE_CONNECTION_MS,
      maxSockets: connections,
      minVersion: 'TLSv1.3',
      ca: options.bundlePem,
      checkServerIdentity: (_host: string, certificate: PeerCertificate) => this.checkServer(certificate),
      ...(credentials && { cert: credentials.certificatePem, key: credentials.privateKeyPem }),
    });
  }

  /**
   * Attests a new agent with a join token (`POST /agent/v1/attest/join-token`): a fresh P-256 key stays here, the
   * server signs the agent SVID for it.
   */
  static async attestWithJoinToken(options: AgentApiOptions, token: string): Promise<AgentCredentials> {
    const keys = await generateKeyPair('ec-p256');
    const csr = await createCsr({ keys });
    const client = new AgentApiClient(options, undefined, 1);
    try {
      const answer = await client.call(AGENT_API_ROUTES.attestJoinToken, { token, csr: csr.pem });
      const { spiffeId, chain } = parseAttestationResponse(answer);
      return {
        spiffeId: spiffeId.toString(),
        certificatePem: chain.map((der) => toPem('CERTIFICATE', der)).join(''),
        privateKeyPem: privateKeyToPem(keys.privateKey),
      };
    } finally {
      client.close();
    }
  }

  /**
   * Attests a new agent with x509pop (challenge, then the nonce signed with the node's key, on one connection): a
   * fresh P-256 key stays here, the server signs the agent SVID for it.
   */
  static async attestWithX509pop(options: AgentApiOptions, node: NodeCertificate): Promise<AgentCredentials> {
    const client = new AgentApiClient(options, undefined, 1);
    try {
      const challenge = await client.call(AGENT_API_ROUTES.x509popChallenge, { certificates: node.certificates });
      const { body, agentKeyPem } = await answerX509popChallenge(node, challenge);
      const { spiffeId, chain } = parseAttestationResponse(await client.call(AGENT_API_ROUTES.attestX509pop, body));
      return {
        spiffeId: spiffeId.toString(),
        certificatePem: chain.map((der) => toPem('CERTIFICATE', der)).join(''),
        privateKeyPem: agentKeyPem,
      };
    } finally {
      client.close();
    }
  }

  /**
   * Sends a request on `route` with a JSON body (an object, or text already serialised; none for a GET) and resolves
   * with the parsed answer. `route.path` may carry a query (`syncPath`).
   *
   * @throws AgentApiError with the method, path, status and the server's message when the answer is not 2xx.
   */
  async call(route: AgentApiRoute, body?: unknown): Promise<unknown> {
    const { method, path } = route;
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const result = await this.send(method, path, payload);
    if (result.status < 200 || result.status >= 300) {
      let answer: unknown;
      try {
        answer = JSON.parse(result.text);
      } catch {
        // Not JSON: the text itself is the message.
      }
      const { message } = parseErrorBody(result.status, answer);
      const retryAfter = result.retryAfter === undefined ? undefined : Number(result.retryAfter);
      throw new AgentApiError(
        `agent api ${method} ${path}: ${result.status} ${answer === undefined ? result.text : message}`,
        result.status,
        retryAfter !== undefined && Number.isFinite(retryAfter) ? retryAfter : undefined,
      );
    }
    return JSON.parse(result.text) as unknown;
  }

  close(): void {
    this.agent.destroy();
  }

  private checkServer(certificate: PeerCertificate): Error | undefined {
    const uris = (certificate.subjectaltname ?? '').split(', ').filter((name) => name.startsWith('URI:'));
    if (uris.length === 1 && uris[0] === `URI:${this.serverId}`) return undefined;
    return new Error(`server certificate: expected the single URI SAN ${this.serverId}, got ${uris.join(', ')}`);
  }

  private send(method: string, path: string, payload: string | undefined): Promise<HttpResult> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: this.options.port,
          agent: this.agent,
          ...(this.options.localAddress !== undefined && { localAddress: this.options.localAddress }),
          method,
          path,
          timeout: REQUEST_TIMEOUT_MS,
          headers:
            payload === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () => {
            const retryAfter = res.headers['retry-after'];
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), retryAfter });
          });
        },
      );
      req.on('timeout', () => {
        const error = Object.assign(new Error(`agent api ${method} ${path}: no answer within 60 s`), {
          code: 'ETIMEDOUT',
        });
        req.destroy(error);
      });
      req.on('error', reject);
      req.end(payload);
    });
  }
}
