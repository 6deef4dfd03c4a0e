/**
 * The server's agent API as an agent calls it: join-token attestation over TLS 1.3 for an agent X509-SVID, then
 * mTLS calls with that SVID over kept-alive connections. The server is authenticated by the trust bundle and its
 * SPIFFE ID (`spiffe://<td>/sigil/server`).
 */
import { type PeerCertificate } from 'node:tls';
import { Agent, request } from 'node:https';
import { AGENT_API_ROUTES, type AgentApiRoute, parseAttestationResponse, parseErrorBody } from '@sigil/agent-api';
import { createCsr, generateKeyPair, privateKeyToPem, toPem } from '@sigil/pki';

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
}

interface HttpResult {
  readonly status: number;
  readonly text: string;
}

const REQUEST_TIMEOUT_MS = 60_000;

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
   * Sends a JSON request on `route` (an object, or text already serialised) and resolves with the parsed answer.
   *
   * @throws Error with the method, path, status and the server's message when the answer is not 2xx.
   */
  async call(route: AgentApiRoute, body: unknown): Promise<unknown> {
    const { method, path } = route;
    const result = await this.send(method, path, typeof body === 'string' ? body : JSON.stringify(body));
    if (result.status < 200 || result.status >= 300) {
      let answer: unknown;
      try {
        answer = JSON.parse(result.text);
      } catch {
        // Not JSON: the text itself is the message.
      }
      const { message } = parseErrorBody(result.status, answer);
      throw new Error(`agent api ${method} ${path}: ${result.status} ${answer === undefined ? result.text : message}`);
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

  private send(method: string, path: string, payload: string): Promise<HttpResult> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: this.options.port,
          agent: this.agent,
          method,
          path,
          timeout: REQUEST_TIMEOUT_MS,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        },
      );
      req.on('timeout', () => req.destroy(new Error(`agent api ${method} ${path}: no answer within 60 s`)));
      req.on('error', reject);
      req.end(payload);
    });
  }
}
