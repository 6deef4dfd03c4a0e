import { type X509Certificate, type webcrypto } from 'node:crypto';
import { request } from 'node:https';
import { createCsrFast, exportPublicKeySpki } from '@sigil/pki';
import { sigilServerId } from '@sigil/runtime';
import { type TrustDomain, idFromCertificate, nodeCertificateFromDer } from '@sigil/spiffe';
import { X509Source, authorizeId, createClientTlsOptions } from '@sigil/workload-api';
import {
  DOWNSTREAM_TAINTED_AUTHORITIES_PATH,
  DOWNSTREAM_X509_CA_PATH,
  parseDownstreamTaintedAuthoritiesResponse,
  parseDownstreamX509CaResponse,
  type DownstreamX509CaRequestBody,
} from '../downstream/downstream-contract.js';
import { AppError } from '../common/errors.js';
import type { ServerConfig } from '../config.js';

/** How long the local agent and the upstream server each get to answer. */
export const UPSTREAM_SIGIL_TIMEOUT_MS = 30_000;
/** A larger answer is not a downstream CA response. */
const MAX_RESPONSE_BYTES = 1024 * 1024;

/** A CA certificate signed by the upstream Sigil server, checked. */
export interface UpstreamSignedCa {
  /** Our new CA certificate. */
  readonly certificateDer: Buffer;
  /** The certificates above ours up to and including the upstream root, the root last. */
  readonly upstreamChainDer: Buffer[];
  /** The upstream trust bundle's X.509 authorities, published in our bundle. */
  readonly upstreamAuthoritiesDer: Buffer[];
}

/**
 * "upstream authority: sigil" (SPIRE's `spire` upstream authority plug-in): gets this server's X509-SVID from the
 * local agent's Workload API, and with it (mTLS, the upstream server authenticated as `spiffe://<td>/sigil/server`
 * against the bundle the agent delivered) asks the upstream server's downstream CA route to sign a CA certificate
 * for `publicKey`. The answer is checked before use: our key, a CA of our trust domain, a chain that links up to one
 * of the upstream bundle's roots.
 */
export class UpstreamSigilAuthority {
  constructor(
    private readonly config: Pick<ServerConfig, 'trustDomain' | 'caTtlSeconds'> & {
      readonly upstreamSigil: NonNullable<ServerConfig['upstreamSigil']>;
    },
  ) {}

  /**
   * @throws AppError `unavailable` naming the step that failed (the agent, the upstream server's answer or refusal),
   * so `localauthority x509 prepare` shows the operator why.
   */
  async signCa(keys: webcrypto.CryptoKeyPair, now: Date): Promise<UpstreamSignedCa> {
    try {
      return await this.askUpstream(keys, now);
    } catch (error) {
      throw new AppError('unavailable', `upstream authority sigil: ${(error as Error).message}`, { cause: error });
    }
  }

  /**
   * The authority IDs of the upstream server's tainted keys (`GET /downstream/v1/tainted-authorities`, the same
   * mTLS authentication as {@link signCa}).
   * @throws AppError `unavailable` naming the step that failed.
   */
  async taintedAuthorities(): Promise<Set<string>> {
    try {
      const body = await this.call('GET', DOWNSTREAM_TAINTED_AUTHORITIES_PATH, undefined);
      try {
        return parseDownstreamTaintedAuthoritiesResponse(body);
      } catch (error) {
        throw new Error(
          `upstream_server_address ${this.config.upstreamSigil.serverAddress.text}: ${(error as Error).message}`,
        );
      }
    } catch (error) {
      throw new AppError('unavailable', `upstream authority sigil: ${(error as Error).message}`, { cause: error });
    }
  }

  private async askUpstream(keys: webcrypto.CryptoKeyPair, now: Date): Promise<UpstreamSignedCa> {
    const spkiDer = exportPublicKeySpki(keys.publicKey);
    const csr = createCsrFast({ privateKey: keys.privateKey, spkiDer });
    const payload: DownstreamX509CaRequestBody = {
      csr: csr.toString('base64'),
      preferred_ttl: this.config.caTtlSeconds,
    };
    const body = await this.call('POST', DOWNSTREAM_X509_CA_PATH, payload);
    return checkSignedCa(body, spkiDer, this.config.trustDomain, now, this.config.upstreamSigil.serverAddress.text);
  }

  /** One mTLS call to the upstream server with this server's X509-SVID from the local agent's Workload API. */
  private async call(method: 'GET' | 'POST', path: string, payload: unknown): Promise<unknown> {
    const { agentSocket, serverAddress } = this.config.upstreamSigil;
    let source: X509Source;
    try {
      source = await X509Source.create({
        clientOptions: { address: `unix://${agentSocket}` },
        timeoutMs: UPSTREAM_SIGIL_TIMEOUT_MS,
      });
    } catch (error) {
      throw new Error(
        `upstream_agent_socket ${agentSocket}: no X509-SVID from the agent's Workload API (${(error as Error).message}); ` +
          'register a downstream entry for this server on the upstream server',
        { cause: error },
      );
    }
    try {
      const tls = createClientTlsOptions(source, authorizeId(sigilServerId(this.config.trustDomain)));
      return await requestJson(serverAddress.host, serverAddress.port, tls, method, path, payload);
    } catch (error) {
      throw new Error(`upstream_server_address ${serverAddress.text}: ${(error as Error).message}`, { cause: error });
    } finally {
      await source.close();
    }
  }
}

function requestJson(
  host: string,
  port: number,
  tls: ReturnType<typeof createClientTlsOptions>,
  method: 'GET' | 'POST',
  path: string,
  payload: unknown,
): Promise<unknown> {
  const data = payload === undefined ? undefined : Buffer.from(JSON.stringify(payload));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        ...tls,
        host,
        port,
        method,
        path,
        headers: data === undefined ? {} : { 'content-type': 'application/json', 'content-length': data.length },
        timeout: UPSTREAM_SIGIL_TIMEOUT_MS,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) req.destroy(new Error(`answer larger than ${MAX_RESPONSE_BYTES} bytes`));
          else chunks.push(chunk);
        });
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            reject(new Error(`answered ${res.statusCode} with a body that is not JSON`));
            return;
          }
          if (res.statusCode !== 200) {
            const message = (json as { message?: unknown } | null)?.message;
            reject(
              new Error(
                `refused ${path === DOWNSTREAM_X509_CA_PATH ? 'the downstream CA' : path} (${res.statusCode}): ${String(message ?? text)}`,
              ),
            );
            return;
          }
          resolve(json);
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${UPSTREAM_SIGIL_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}

/** Checks the upstream's answer; throws naming what is wrong. */
export function checkSignedCa(
  body: unknown,
  spkiDer: Uint8Array,
  trustDomain: TrustDomain,
  now: Date,
  from: string,
): UpstreamSignedCa {
  const fail = (message: string): never => {
    throw new Error(`upstream_server_address ${from}: ${message}`);
  };
  let parsed;
  try {
    parsed = parseDownstreamX509CaResponse(body);
  } catch (error) {
    return fail((error as Error).message);
  }
  const chain = parsed.caCertChainDer.map((der, index) => parseCertificate(der, `ca_cert_chain[${index}]`, fail));
  const roots = parsed.x509AuthoritiesDer.map((der, index) =>
    parseCertificate(der, `x509_authorities[${index}]`, fail),
  );
  const ca = chain[0]!;
  if (!ca.publicKey.export({ type: 'spki', format: 'der' }).equals(Buffer.from(spkiDer))) {
    fail('ca_cert_chain[0]: is not a certificate of the key this server sent');
  }
  if (!ca.ca) fail('ca_cert_chain[0]: is not a CA certificate (basicConstraints cA=false)');
  let named: string;
  try {
    named = idFromCertificate(ca.raw).toString();
  } catch (error) {
    named = (error as Error).message;
  }
  if (named !== trustDomain.idString()) {
    fail(`ca_cert_chain[0]: must name ${trustDomain.idString()} as its one URI SAN, got ${named}`);
  }
  if (new Date(ca.validTo).getTime() <= now.getTime()) fail(`ca_cert_chain[0]: expired at ${ca.validTo}`);
  for (let index = 1; index < chain.length; index += 1) {
    if (!chain[index - 1]!.checkIssued(chain[index]!) || !chain[index - 1]!.verify(chain[index]!.publicKey)) {
      fail(`ca_cert_chain[${index - 1}]: is not signed by ca_cert_chain[${index}]`);
    }
  }
  if (roots.some((candidate) => candidate.raw.equals(ca.raw))) fail('ca_cert_chain[0]: is one of the x509_authorities');
  const top = chain.at(-1)!;
  const selfSigned = roots.find((root) => root.raw.equals(top.raw));
  const root = selfSigned ?? roots.find((candidate) => top.checkIssued(candidate) && top.verify(candidate.publicKey));
  if (root === undefined) fail(`ca_cert_chain: does not link up to any of the ${roots.length} x509_authorities`);
  const above = chain.slice(1).map((certificate) => certificate.raw);
  return {
    certificateDer: ca.raw,
    upstreamChainDer: selfSigned === undefined ? [...above, root!.raw] : above,
    upstreamAuthoritiesDer: roots.map((certificate) => certificate.raw),
  };
}

function parseCertificate(der: Buffer, field: string, fail: (message: string) => never): X509Certificate {
  try {
    return nodeCertificateFromDer(der);
  } catch {
    return fail(`${field}: not a DER certificate`);
  }
}
