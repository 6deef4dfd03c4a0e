import { type X509Certificate, type webcrypto } from 'node:crypto';
import { request } from 'node:https';
import { createCsrFast, exportPublicKeySpki } from '@sigil/pki';
import { sigilServerId } from '@sigil/runtime';
import { TrustBundle, type TrustDomain, idFromCertificate, nodeCertificateFromDer } from '@sigil/spiffe';
import { X509Source, type X509TlsSource, authorizeId, createClientTlsOptions } from '@sigil/workload-api';
import {
  DOWNSTREAM_AUTHORITIES_PATH,
  DOWNSTREAM_JWT_AUTHORITY_PATH,
  DOWNSTREAM_X509_CA_PATH,
  parseDownstreamAuthoritiesResponse,
  parseDownstreamJwtAuthorities,
  toJwtAuthorityBody,
  type DownstreamJwtAuthorityRequestBody,
  type SharedJwtAuthority,
  parseDownstreamX509AuthoritiesResponse,
  parseDownstreamX509CaResponse,
  type DownstreamX509CaRequestBody,
} from '../downstream/downstream-contract.js';
import { AppError } from '../common/errors.js';
import type { ServerConfig } from '../config.js';
import { checkUpstreamRoots } from './upstream-authorities.js';

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

/** The upstream bundle's authorities, as a nested server follows them. */
export interface UpstreamAuthorities {
  readonly x509Authorities: Buffer[];
  /** Undefined from an upstream server that does not share JWT authorities yet (the field is absent). */
  readonly jwtAuthorities: SharedJwtAuthority[] | undefined;
}

/**
 * "upstream authority: sigil" (SPIRE's `spire` upstream authority plug-in): gets this server's X509-SVID from the
 * local agent's Workload API, and with it (mTLS, the upstream server authenticated as `spiffe://<td>/sigil/server`)
 * asks the upstream server's downstream routes to sign a CA certificate for `publicKey`, or for its bundle's X.509
 * authorities. The upstream server's certificate must chain to the upstream roots this server already stores
 * (`trusted`); only when it stores none yet (the first key: bootstrap) is the bundle the agent delivered trusted, so
 * whoever answers on the agent socket cannot stand in for the upstream server once a key exists. The answers are
 * checked before use: our key, a CA of our trust domain, a chain that links up to one of the upstream bundle's roots;
 * roots that are self-signed CA certificates, not too many ({@link checkUpstreamRoots}).
 */
export class UpstreamSigilAuthority {
  /**
   * @param timeoutMs the longest one call to the upstream server may take, from its start to the end of the answer
   *   (a server that answers a byte at a time never trips a socket's idle timeout, and the rotation tick waits for it)
   */
  constructor(
    private readonly config: Pick<ServerConfig, 'trustDomain' | 'caTtlSeconds'> & {
      readonly upstreamSigil: NonNullable<ServerConfig['upstreamSigil']>;
    },
    private readonly timeoutMs = UPSTREAM_SIGIL_TIMEOUT_MS,
  ) {}

  /**
   * @param trusted the upstream roots already stored (empty at bootstrap), which the upstream server must chain to.
   * @throws AppError `unavailable` naming the step that failed (the agent, the upstream server's answer or refusal),
   * so `localauthority x509 prepare` shows the operator why.
   */
  async signCa(keys: webcrypto.CryptoKeyPair, now: Date, trusted: readonly Uint8Array[]): Promise<UpstreamSignedCa> {
    try {
      return await this.askUpstream(keys, now, trusted);
    } catch (error) {
      throw new AppError('unavailable', `upstream authority sigil: ${(error as Error).message}`, { cause: error });
    }
  }

  /**
   * The authority IDs of the upstream server's tainted keys (`GET /downstream/v1/authorities`, the same
   * mTLS authentication as {@link signCa}, the upstream server verified against `trusted`, never empty).
   * @throws AppError `unavailable` naming the step that failed.
   */
  async taintedAuthorities(trusted: readonly Uint8Array[]): Promise<Set<string>> {
    try {
      const body = await this.call('GET', DOWNSTREAM_AUTHORITIES_PATH, undefined, requireStored(trusted));
      try {
        return parseDownstreamAuthoritiesResponse(body);
      } catch (error) {
        throw new Error(
          `upstream_server_address ${this.config.upstreamSigil.serverAddress.text}: ${(error as Error).message}`,
        );
      }
    } catch (error) {
      throw new AppError('unavailable', `upstream authority sigil: ${(error as Error).message}`, { cause: error });
    }
  }

  /**
   * The upstream bundle's X.509 authorities now (`x509_authorities` of the same `GET
   * /downstream/v1/authorities`), checked ({@link checkUpstreamRoots}), and its JWT authorities (`jwt_authorities`,
   * checked by {@link parseDownstreamJwtAuthorities}), from an upstream server whose certificate chains to `trusted`
   * (never empty: with nothing stored there is nothing to follow, and the agent's bundle is not trusted for this).
   * @throws AppError `unavailable` naming the step that failed.
   */
  async authorities(trusted: readonly Uint8Array[], now: Date): Promise<UpstreamAuthorities> {
    try {
      const body = await this.call('GET', DOWNSTREAM_AUTHORITIES_PATH, undefined, requireStored(trusted));
      try {
        return {
          x509Authorities: checkUpstreamRoots(parseDownstreamX509AuthoritiesResponse(body), now),
          jwtAuthorities: parseDownstreamJwtAuthorities(body),
        };
      } catch (error) {
        throw new Error(
          `upstream_server_address ${this.config.upstreamSigil.serverAddress.text}: ${(error as Error).message}`,
        );
      }
    } catch (error) {
      throw new AppError('unavailable', `upstream authority sigil: ${(error as Error).message}`, { cause: error });
    }
  }

  /**
   * Publishes a new JWT key's public part to the upstream server (`POST /downstream/v1/jwt-authority`, SPIRE's
   * `PublishJWTAuthority`; the same mTLS as {@link signCa}, the upstream server verified against `trusted`, or the
   * agent's bundle at the bootstrap when nothing is stored), and checks that its answer, the upstream bundle's JWT
   * authorities, holds it with an expiry after `now` and no later than asked (the upstream server cuts it to its
   * `downstream_ca_max_ttl`). Returns the key as the upstream server stored it: its expiry is the key's.
   * @throws AppError `unavailable` naming the step that failed (the agent, the upstream server's answer or refusal).
   */
  async publishJwtAuthority(
    authority: SharedJwtAuthority,
    now: Date,
    trusted: readonly Uint8Array[],
  ): Promise<SharedJwtAuthority> {
    try {
      const payload: DownstreamJwtAuthorityRequestBody = { jwt_authority: toJwtAuthorityBody(authority) };
      const body = await this.call('POST', DOWNSTREAM_JWT_AUTHORITY_PATH, payload, trusted);
      try {
        const listed = parseDownstreamJwtAuthorities(body);
        if (listed === undefined) throw new Error('jwt_authorities: must be an array');
        return publishedJwtAuthority(listed, authority, now);
      } catch (error) {
        throw new Error(
          `upstream_server_address ${this.config.upstreamSigil.serverAddress.text}: ${(error as Error).message}`,
        );
      }
    } catch (error) {
      throw new AppError('unavailable', `upstream authority sigil: ${(error as Error).message}`, { cause: error });
    }
  }

  private async askUpstream(
    keys: webcrypto.CryptoKeyPair,
    now: Date,
    trusted: readonly Uint8Array[],
  ): Promise<UpstreamSignedCa> {
    const spkiDer = exportPublicKeySpki(keys.publicKey);
    const csr = createCsrFast({ privateKey: keys.privateKey, spkiDer });
    const payload: DownstreamX509CaRequestBody = {
      csr: csr.toString('base64'),
      preferred_ttl: this.config.caTtlSeconds,
    };
    const body = await this.call('POST', DOWNSTREAM_X509_CA_PATH, payload, trusted);
    return checkSignedCa(body, spkiDer, this.config.trustDomain, now, this.config.upstreamSigil.serverAddress.text);
  }

  /**
   * One mTLS call to the upstream server with this server's X509-SVID from the local agent's Workload API; the
   * upstream server is verified against `trusted` (the stored upstream roots), or against the agent's bundle when
   * none is stored yet.
   */
  private async call(
    method: 'GET' | 'POST',
    path: string,
    payload: unknown,
    trusted: readonly Uint8Array[],
  ): Promise<unknown> {
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
      const verifyWith = trusted.length === 0 ? source : storedRootsSource(source, this.config.trustDomain, trusted);
      const tls = createClientTlsOptions(verifyWith, authorizeId(sigilServerId(this.config.trustDomain)));
      return await requestJson(serverAddress.host, serverAddress.port, tls, method, path, payload, this.timeoutMs);
    } catch (error) {
      throw new Error(`upstream_server_address ${serverAddress.text}: ${(error as Error).message}`, { cause: error });
    } finally {
      await source.close();
    }
  }
}

/** The agent's SVID to present, with the stored upstream roots as the only bundle to verify the upstream server. */
function storedRootsSource(
  source: X509Source,
  trustDomain: TrustDomain,
  trusted: readonly Uint8Array[],
): X509TlsSource {
  const bundle = TrustBundle.create(trustDomain, { x509Authorities: trusted });
  return {
    getX509Svid: () => source.getX509Svid(),
    getBundles: () => [bundle],
    getBundleForTrustDomain: (candidate) => {
      if (!candidate.equals(trustDomain)) throw new Error(`no stored bundle of ${candidate.name}`);
      return bundle;
    },
  };
}

/** The stored upstream roots a read of the upstream server needs: the agent's bundle is trusted only to sign the first key. */
function requireStored(trusted: readonly Uint8Array[]): readonly Uint8Array[] {
  if (trusted.length === 0) throw new Error('no upstream roots stored yet to authenticate the upstream server with');
  return trusted;
}

function requestJson(
  host: string,
  port: number,
  tls: ReturnType<typeof createClientTlsOptions>,
  method: 'GET' | 'POST',
  path: string,
  payload: unknown,
  timeoutMs: number,
): Promise<unknown> {
  const data = payload === undefined ? undefined : Buffer.from(JSON.stringify(payload));
  let deadline: NodeJS.Timeout | undefined;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        ...tls,
        host,
        port,
        method,
        path,
        headers: data === undefined ? {} : { 'content-type': 'application/json', 'content-length': data.length },
        timeout: timeoutMs,
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
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    deadline = setTimeout(() => req.destroy(new Error(`no complete answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', reject);
    req.end(data);
  }).finally(() => clearTimeout(deadline));
}

/**
 * The key just published as the upstream server's answer (`listed`) holds it: the same kid and public key, with an
 * expiry after `now` and no later than asked (the upstream server cuts it to its `downstream_ca_max_ttl`).
 * @throws Error naming what is wrong with the answer
 */
export function publishedJwtAuthority(
  listed: readonly SharedJwtAuthority[],
  authority: SharedJwtAuthority,
  now: Date,
): SharedJwtAuthority {
  const stored = listed.find((key) => key.kid === authority.kid && key.publicKeyDer.equals(authority.publicKeyDer));
  if (stored === undefined) throw new Error(`jwt_authorities: does not hold the key ${authority.kid} just published`);
  if (stored.notAfter.getTime() <= now.getTime() || stored.notAfter.getTime() > authority.notAfter.getTime()) {
    throw new Error(
      `jwt_authorities: the key ${authority.kid} just published expires ${stored.notAfter.toISOString()}, not ` +
        `after now (${now.toISOString()}) and no later than asked (${authority.notAfter.toISOString()})`,
    );
  }
  return stored;
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
  try {
    checkUpstreamRoots(parsed.x509AuthoritiesDer, now);
  } catch (error) {
    fail((error as Error).message);
  }
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
