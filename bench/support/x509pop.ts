/**
 * x509pop for the denial-of-service benchmarks: a node CA with real node certificates (what a real agent attests
 * with), forged chains named like the CA (what an attacker without the CA's key can send), and the attestation
 * itself (challenge, then the signed nonce) over TLS from a chosen loopback source address, as a second host would.
 */
import { AGENT_API_ROUTES, type X509popAnswerBody, parseX509popChallenge } from '@sigil/agent-api';
import { createPrivateKey, randomBytes, sign, webcrypto, type KeyObject } from 'node:crypto';
import { Agent, request } from 'node:https';
import { performance } from 'node:perf_hooks';
import { createCsr, generateKeyPair, privateKeyToPem } from '@sigil/pki';
// The one @peculiar/x509 setup (reflect-metadata first, Node's WebCrypto as the provider) is @sigil/spiffe's.
import { x509 } from '@sigil/spiffe/x509';

const CA_NAME = 'CN=Bench Node CA, O=Sigil bench';
const ECDSA = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const HOUR_MS = 3_600_000;

/** A node's certificate (public: anyone may hold it) and, for the real node only, its private key. */
export interface NodeCertificate {
  /** Base64 DER, leaf first, as `POST /agent/v1/attest/x509pop/challenge` takes it. */
  readonly certificates: readonly string[];
  readonly certificatePem: string;
  readonly privateKey: KeyObject;
  readonly privateKeyPem: string;
}

const newKeys = () => webcrypto.subtle.generateKey(ECDSA, true, ['sign', 'verify']);

async function pkcs8(keys: webcrypto.CryptoKeyPair): Promise<KeyObject> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
}

/** DNS names that pad a certificate to about `bytes` bytes (each name adds ~20 bytes). */
function padding(bytes: number): x509.Extension[] {
  const count = Math.max(0, Math.floor((bytes - 450) / 20));
  if (count === 0) return [];
  const names = Array.from({ length: count }, (_, index) => ({
    type: 'dns' as const,
    value: `pad${index}.bench.test`,
  }));
  return [new x509.SubjectAlternativeNameExtension(names)];
}

export class X509popPki {
  private constructor(
    readonly ca: x509.X509Certificate,
    private readonly caKeys: webcrypto.CryptoKeyPair,
  ) {}

  /** A self-signed P-256 node CA, valid for a day. */
  static async create(): Promise<X509popPki> {
    const keys = await newKeys();
    const ca = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: `01${randomBytes(8).toString('hex')}`,
      name: CA_NAME,
      notBefore: new Date(Date.now() - HOUR_MS),
      notAfter: new Date(Date.now() + 24 * HOUR_MS),
      keys,
      signingAlgorithm: ECDSA,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return new X509popPki(ca, keys);
  }

  get caPem(): string {
    return this.ca.toString('pem');
  }

  /** A node certificate signed by the CA (CN `name`, digitalSignature), with its key. */
  async issueNode(name: string): Promise<NodeCertificate> {
    const keys = await newKeys();
    const certificate = await x509.X509CertificateGenerator.create({
      serialNumber: `01${randomBytes(8).toString('hex')}`,
      subject: `CN=${name}`,
      issuer: this.ca.subject,
      notBefore: new Date(Date.now() - HOUR_MS),
      notAfter: new Date(Date.now() + 24 * HOUR_MS),
      publicKey: keys.publicKey,
      signingKey: this.caKeys.privateKey,
      signingAlgorithm: ECDSA,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        await x509.AuthorityKeyIdentifierExtension.create(this.caKeys.publicKey),
      ],
    });
    const privateKey = await pkcs8(keys);
    return {
      certificates: [Buffer.from(certificate.rawData).toString('base64')],
      certificatePem: certificate.toString('pem'),
      privateKey,
      privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    };
  }

  /**
   * The most expensive chain an attacker without the CA's key can send: `count` certificates of about
   * `bytesPerCertificate` bytes, every one named as issued by the CA and the intermediates named like the CA, with
   * no key identifiers, each intermediate signed by the next one's key and listed in reverse, so that a verifier
   * without bounds tries every candidate at every step.
   */
  async forgedChain(count: number, bytesPerCertificate: number): Promise<string[]> {
    const keys = await Promise.all(Array.from({ length: count }, () => newKeys()));
    const forge = async (index: number): Promise<string> => {
      const isCa = index > 0;
      const certificate = await x509.X509CertificateGenerator.create({
        serialNumber: `01${randomBytes(8).toString('hex')}`,
        subject: isCa ? CA_NAME : 'CN=forged node',
        issuer: CA_NAME,
        notBefore: new Date(Date.now() - HOUR_MS),
        notAfter: new Date(Date.now() + 24 * HOUR_MS),
        publicKey: keys[index]!.publicKey,
        signingKey: keys[Math.min(index + 1, count - 1)]!.privateKey,
        signingAlgorithm: ECDSA,
        extensions: [
          new x509.BasicConstraintsExtension(isCa, undefined, true),
          new x509.KeyUsagesExtension(
            isCa ? x509.KeyUsageFlags.keyCertSign : x509.KeyUsageFlags.digitalSignature,
            true,
          ),
          ...padding(bytesPerCertificate),
        ],
      });
      return Buffer.from(certificate.rawData).toString('base64');
    };
    const [leaf, ...intermediates] = await Promise.all(Array.from({ length: count }, (_, index) => forge(index)));
    return [leaf!, ...intermediates.reverse()];
  }
}

/** An answer of the agent API: the status and the parsed JSON body. */
export interface TlsAnswer {
  readonly status: number;
  readonly body: Record<string, unknown>;
  /** True when the request went on a new connection (the agent had no kept-alive one to reuse). */
  readonly newConnection: boolean;
}

/**
 * The answer of an attacker's request the server closed the connection on without answering (refused at accept by
 * the per-address connection caps or handshake rate): status 0.
 */
export const CLOSED_UNANSWERED: TlsAnswer = Object.freeze({ status: 0, body: {}, newConnection: true });

/** One JSON POST on the TLS port through `agent`, from `localAddress`; resolves with the status and body. */
export function postJson(
  port: number,
  agent: Agent,
  path: string,
  body: unknown,
  localAddress?: string,
): Promise<TlsAnswer> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path,
        agent,
        ...(localAddress !== undefined && { localAddress }),
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: Record<string, unknown> = {};
          try {
            parsed = JSON.parse(text) as Record<string, unknown>;
          } catch {
            // Not JSON (a proxy page, a reset): the status says enough.
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, newConnection: !req.reusedSocket });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * A whole x509pop attestation of `node` (challenge, signed nonce, fresh agent key): the final answer, or the
 * challenge's answer when that was refused.
 */
export async function attestX509pop(
  port: number,
  agent: Agent,
  node: NodeCertificate,
  localAddress?: string,
): Promise<TlsAnswer> {
  const challenge = await postJson(
    port,
    agent,
    AGENT_API_ROUTES.x509popChallenge.path,
    { certificates: node.certificates },
    localAddress,
  );
  if (challenge.status !== 200) return challenge;
  const { body } = await answerX509popChallenge(node, challenge.body);
  return postJson(port, agent, AGENT_API_ROUTES.attestX509pop.path, body, localAddress);
}

/**
 * The answer to the server's x509pop challenge (`challenge`: the challenge route's JSON answer): the nonce signed with
 * the node's key and a CSR for a fresh P-256 agent key, which comes back as `agentKeyPem` (PKCS#8 PEM).
 */
export async function answerX509popChallenge(
  node: NodeCertificate,
  challenge: unknown,
): Promise<{ body: X509popAnswerBody; agentKeyPem: string }> {
  const { challengeId, nonce } = parseX509popChallenge(challenge);
  const signature = sign('sha256', nonce, { key: node.privateKey, dsaEncoding: 'der' }).toString('base64');
  const keys = await generateKeyPair('ec-p256');
  const csr = await createCsr({ keys });
  return {
    body: { challenge_id: challengeId, signature, csr: csr.pem },
    agentKeyPem: privateKeyToPem(keys.privateKey),
  };
}

/** The agent for an attacker's or a caller's TLS connections (the server certificate is not checked). */
export function tlsAgent(connections: number): Agent {
  return new Agent({ keepAlive: true, maxSockets: connections, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
}

/** What {@link attestRepeatedly} saw: latencies of successful attestations, and the status of each refused one. */
export interface AttestationRun {
  readonly latencies: number[];
  /** When each successful attestation started (`performance.now()`), beside its latency. */
  readonly startedAt: number[];
  readonly refused: Map<number, number>;
}

/**
 * A legitimate node: attests `node` from `localAddress` once every `intervalMs` (one attestation at a time) until
 * `until` resolves.
 */
export async function attestRepeatedly(
  port: number,
  node: NodeCertificate,
  localAddress: string,
  intervalMs: number,
  until: Promise<void>,
): Promise<AttestationRun> {
  let done = false;
  void until.then(() => (done = true));
  const agent = tlsAgent(1);
  const run: AttestationRun = { latencies: [], startedAt: [], refused: new Map() };
  try {
    while (!done) {
      const start = performance.now();
      const answer = await attestX509pop(port, agent, node, localAddress);
      const elapsed = performance.now() - start;
      if (answer.status === 200) {
        run.latencies.push(elapsed);
        run.startedAt.push(start);
      } else run.refused.set(answer.status, (run.refused.get(answer.status) ?? 0) + 1);
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, intervalMs - elapsed)));
    }
  } finally {
    agent.destroy();
  }
  return run;
}
