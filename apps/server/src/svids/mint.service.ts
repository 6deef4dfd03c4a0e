import { Inject, Injectable } from '@nestjs/common';
import { PkiError, parseCsrFast } from '@sigil/pki';
import { AppError } from '../common/errors.js';
import { CaService } from '../ca/ca.service.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { ENTRY_LIMITS, checkDnsNames, checkTtl, checkWorkloadId } from '../entries/entry-rules.js';
import type { MintJwtSvidRequest, MintJwtSvidResponse, MintX509SvidRequest, MintX509SvidResponse } from './mint.dto.js';

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * SPIRE's `MintX509SVID` and `MintJWTSVID`: an SVID for any workload SPIFFE ID of the trust domain, signed with the
 * active CA or JWT key, without a registration entry. The ID and DNS names follow the entries' rules, the TTL an
 * entry's bounds (0: the server default), and the signing key's remaining life caps it. X.509: the caller sends a
 * CSR, so the private key never reaches the server.
 */
@Injectable()
export class MintService {
  constructor(
    private readonly ca: CaService,
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'trustDomain'>,
  ) {}

  mintX509(request: MintX509SvidRequest): MintX509SvidResponse {
    const csr = parseCsr(request.csr);
    if (csr.uris.length !== 1) {
      throw new AppError(
        'invalid_argument',
        `csr: must request exactly one URI SAN, the SPIFFE ID; has ${csr.uris.length}`,
      );
    }
    const spiffeId = checkWorkloadId('csr: URI SAN', csr.uris[0], this.config.trustDomain);
    const dnsNames = checkDnsNames(csr.dnsNames);
    const ttl = checkTtl('ttl', request.ttl ?? 0, ENTRY_LIMITS.x509SvidTtl);
    const signed = this.ca.signX509Svid({
      spiffeId,
      spkiDer: csr.spkiDer,
      dnsNames,
      ...(ttl !== 0 && { ttlSeconds: ttl }),
    });
    return {
      spiffe_id: spiffeId.toString(),
      cert_chain: signed.certificateChainDer.map((der) => der.toString('base64')),
      expires_at: signed.expiresAt.toISOString(),
    };
  }

  async mintJwt(request: MintJwtSvidRequest): Promise<MintJwtSvidResponse> {
    const spiffeId = checkWorkloadId('spiffe_id', request.spiffe_id, this.config.trustDomain);
    const ttl = checkTtl('ttl', request.ttl ?? 0, ENTRY_LIMITS.jwtSvidTtl);
    const signed = await this.ca.signJwtSvid({
      spiffeId,
      audience: request.audience,
      ...(ttl !== 0 && { ttlSeconds: ttl }),
    });
    return { spiffe_id: spiffeId.toString(), token: signed.token, expires_at: signed.expiresAt.toISOString() };
  }
}

/** The CSR as PEM, or as base64 DER; its self-signature verified. */
function parseCsr(text: string): ReturnType<typeof parseCsrFast> {
  const trimmed = text.trim();
  let input: string | Buffer = trimmed;
  if (!trimmed.startsWith('-----BEGIN')) {
    if (!BASE64.test(trimmed)) throw new AppError('invalid_argument', 'csr: must be PEM or base64 DER');
    input = Buffer.from(trimmed, 'base64');
  }
  try {
    return parseCsrFast(input);
  } catch (error) {
    if (error instanceof PkiError) throw new AppError('invalid_argument', error.message, { cause: error });
    throw error;
  }
}
