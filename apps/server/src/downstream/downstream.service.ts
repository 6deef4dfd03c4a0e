import { nodeCertificateFromDer } from '@sigil/spiffe';
import { Inject, Injectable, Logger } from '@nestjs/common';
import { AuditService } from '../audit/audit.service.js';
import { classify } from '../audit/audit.interceptor.js';
import { BundleService } from '../bundle/bundle.service.js';
import { CaService } from '../ca/ca.service.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { DOWNSTREAM_CA_ACTION, DOWNSTREAM_JWT_AUTHORITY_ACTION } from './downstream-auth.guard.js';
import {
  MAX_PUBLISHED_JWT_AUTHORITIES_PER_CALLER,
  parseJwtAuthority,
  toJwtAuthorityBody,
  type SharedJwtAuthority,
} from './downstream-contract.js';
import type {
  DownstreamAuthoritiesResponse,
  DownstreamJwtAuthorityRequest,
  DownstreamJwtAuthorityResponse,
  DownstreamX509CaRequest,
  DownstreamX509CaResponse,
} from './downstream.dto.js';

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * Signs a downstream server's CA (SPIRE's `NewDownstreamX509CA`) for a caller the guard found to be a downstream
 * entry: an intermediate of our CA for the CSR's key, at most `downstream_ca_max_ttl` long, with our bundle's roots.
 * Audited with the caller's SPIFFE ID as the actor and the new CA's serial number as the target.
 */
@Injectable()
export class DownstreamService {
  private readonly logger = new Logger(DownstreamService.name);

  constructor(
    private readonly ca: CaService,
    private readonly bundles: BundleService,
    private readonly audit: AuditService,
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'downstreamCaMaxTtlSeconds'>,
  ) {}

  async newX509Ca(caller: string, request: DownstreamX509CaRequest): Promise<DownstreamX509CaResponse> {
    const audited = { actor: caller, action: DOWNSTREAM_CA_ACTION };
    try {
      const csr = request.csr.trim();
      if (!BASE64.test(csr)) throw new AppError('invalid_argument', 'csr: must be base64 DER');
      const maxTtl = this.config.downstreamCaMaxTtlSeconds;
      const ttlSeconds = request.preferred_ttl ? Math.min(request.preferred_ttl, maxTtl) : maxTtl;
      const signed = await this.ca.signDownstreamX509Ca({ csr: Buffer.from(csr, 'base64'), ttlSeconds });
      const serial = nodeCertificateFromDer(signed.certificateChainDer[0]!).serialNumber.toLowerCase();
      await this.audit.record({ ...audited, target: serial, result: 'ok', statusCode: 200 });
      this.logger.log({ msg: 'downstream CA signed', spiffeId: caller, serial, notAfter: signed.expiresAt });
      return {
        ca_cert_chain: signed.certificateChainDer.map((der) => der.toString('base64')),
        x509_authorities: this.x509Authorities(),
        expires_at: signed.expiresAt.toISOString(),
      };
    } catch (error) {
      const { kind, status } = classify(error);
      await this.audit.record({ ...audited, target: null, result: kind, statusCode: status });
      throw error;
    }
  }

  /**
   * Publishes a downstream server's new JWT key in our bundle (SPIRE's `PublishJWTAuthority`) and answers our
   * bundle's JWT authorities. The key is checked here ({@link parseJwtAuthority}: kid, key type, expiry syntax), its
   * expiry, kid and the caller's count under the rotation lock ({@link CaService.publishDownstreamJwtAuthority}): in
   * the future, cut to `downstream_ca_max_ttl` from now (what the caller's CA may live; the answer holds the expiry
   * stored, which the caller uses), a kid no other key has, at most
   * {@link MAX_PUBLISHED_JWT_AUTHORITIES_PER_CALLER} unexpired keys per caller. Audited with the caller's SPIFFE ID
   * as the actor and the kid as the target.
   */
  async publishJwtAuthority(
    caller: string,
    request: DownstreamJwtAuthorityRequest,
  ): Promise<DownstreamJwtAuthorityResponse> {
    const audited = { actor: caller, action: DOWNSTREAM_JWT_AUTHORITY_ACTION };
    let key: SharedJwtAuthority | undefined;
    try {
      try {
        key = parseJwtAuthority(request.jwt_authority, 'jwt_authority');
      } catch (error) {
        throw new AppError('invalid_argument', (error as Error).message);
      }
      const stored = await this.ca.publishDownstreamJwtAuthority(caller, key, {
        maxLifetimeSeconds: this.config.downstreamCaMaxTtlSeconds,
        maxPerCaller: MAX_PUBLISHED_JWT_AUTHORITIES_PER_CALLER,
      });
      await this.audit.record({ ...audited, target: key.kid, result: 'ok', statusCode: 200 });
      this.logger.log({
        msg: 'downstream JWT authority published',
        spiffeId: caller,
        kid: key.kid,
        notAfter: stored.notAfter,
        ...(stored.notAfter.getTime() < key.notAfter.getTime() && { askedNotAfter: key.notAfter }),
      });
    } catch (error) {
      const { kind, status } = classify(error);
      await this.audit.record({ ...audited, target: key?.kid ?? null, result: kind, statusCode: status });
      throw error;
    }
    return { jwt_authorities: (await this.ca.bundleJwtAuthorities()).map(toJwtAuthorityBody) };
  }

  /**
   * Our tainted keys' authority IDs (the agent sync's list), our X.509 authorities as this replica's bundle holds
   * them, and our bundle's JWT authorities with their expiry (a read: not audited; refusals are, by the guard).
   */
  async taintedAuthorities(): Promise<DownstreamAuthoritiesResponse> {
    return {
      tainted_authorities: [...this.bundles.ownTaintedAuthorities()],
      x509_authorities: this.x509Authorities(),
      jwt_authorities: (await this.ca.bundleJwtAuthorities()).map(toJwtAuthorityBody),
    };
  }

  private x509Authorities(): string[] {
    return this.bundles
      .ownBundle()
      .x509AuthoritiesDer()
      .map((der) => Buffer.from(der).toString('base64'));
  }
}
