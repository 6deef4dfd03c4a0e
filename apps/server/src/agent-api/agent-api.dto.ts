import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { CSR_MAX_BYTES } from '@sigil/pki';
import { JWT_SVID_MAX_AUDIENCES, JWT_SVID_MAX_AUDIENCE_BYTES } from '@sigil/runtime';
import type { SpiffeJwks } from '@sigil/spiffe';
import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsBase64,
  IsInt,
  IsNotEmpty,
  IsOptional,
  IsString,
  IsUUID,
  MaxLength,
  Min,
} from 'class-validator';
import { AppError, type AppErrorKind } from '../common/errors.js';
import { EntryResponseDto, toEntryResponse } from '../entries/entry.dto.js';
import type { IssuedAgentSvid } from './agent-svid.service.js';
import type { SignedEntryJwtSvid, X509SvidRequest, X509SvidResult } from './svid-signing.service.js';
import type { SyncResult } from './sync.service.js';
import { MAX_CSR_BATCH } from './signing-limits.js';
import { X509POP_MAX_CERTIFICATES } from './x509pop.js';

export { MAX_CSR_BATCH } from './signing-limits.js';
/** Longest base64 certificate of an x509pop chain. */
const MAX_CERTIFICATE_BASE64 = 16 * 1024;

// The DTOs check shape; the services check meaning (CSR signatures, authorisation, chains).

export class JoinTokenAttestationDto {
  @ApiProperty({ description: 'the join token (secret), as `token generate` printed it' })
  @IsString()
  @IsNotEmpty()
  @MaxLength(256)
  token!: string;

  @ApiProperty({ description: "PEM PKCS#10 request for the agent's key; a URI SAN is not needed" })
  @IsString()
  @MaxLength(CSR_MAX_BYTES)
  csr!: string;
}

export class X509popChallengeRequestDto {
  @ApiProperty({ type: [String], description: 'base64 DER certificates: the leaf, then intermediates' })
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(X509POP_MAX_CERTIFICATES)
  @IsBase64(undefined, { each: true })
  @MaxLength(MAX_CERTIFICATE_BASE64, { each: true })
  certificates!: string[];
}

export class X509popAttestationDto {
  @ApiProperty({ format: 'uuid' })
  @IsUUID()
  challenge_id!: string;

  @ApiProperty({
    description:
      "base64 signature over the nonce with the leaf's key: ECDSA with SHA-256 (DER) or RSA PKCS#1 v1.5 with SHA-256",
  })
  @IsBase64()
  @MaxLength(4096)
  signature!: string;

  @ApiProperty({ description: "PEM PKCS#10 request for the agent's key (another key than the leaf's is fine)" })
  @IsString()
  @MaxLength(CSR_MAX_BYTES)
  csr!: string;
}

export class RenewAgentSvidDto {
  @ApiProperty({ description: 'PEM PKCS#10 request for the renewed SVID' })
  @IsString()
  @MaxLength(CSR_MAX_BYTES)
  csr!: string;
}

export class SyncQueryDto {
  @ApiPropertyOptional({ minimum: 0, default: 0, description: 'revision of the last answer; 0 for everything' })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(0)
  revision?: number;

  @ApiPropertyOptional({ minimum: 0, description: '`spiffe_sequence` of the bundle the agent holds' })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(0)
  bundle_sequence?: number;

  @ApiPropertyOptional({ minimum: 0, default: 0, description: 'how long to wait for a change, in ms (capped at 30 s)' })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(0)
  wait_ms?: number;
}

/** The shape of one CSR of a batch, for the OpenAPI document; {@link parseBatchX509SvidBody} checks it. */
export class X509SvidRequestDto {
  @ApiProperty({ format: 'uuid' })
  entry_id!: string;

  @ApiProperty({
    maxLength: CSR_MAX_BYTES,
    description: 'PEM PKCS#10 request; its URI SAN, if any, must be the entry SPIFFE ID',
  })
  csr!: string;
}

/**
 * The shape of a `POST /agent/v1/svids/x509` body, for the OpenAPI document. The route is the signing hot path, so
 * {@link parseBatchX509SvidBody} checks the body by hand instead of the ValidationPipe (class-transformer and
 * class-validator over up to 500 items cost about 3 % of the server's signing CPU).
 */
export class BatchX509SvidDto {
  @ApiProperty({ type: [X509SvidRequestDto], minItems: 1, maxItems: MAX_CSR_BATCH })
  csrs!: X509SvidRequestDto[];
}

const BATCH_FIELDS = new Set(['csrs']);
const REQUEST_FIELDS = new Set(['entry_id', 'csr']);

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

function unknownFields(value: Record<string, unknown>, known: ReadonlySet<string>, path: string): string[] {
  return Object.keys(value)
    .filter((key) => !known.has(key))
    .map((key) => `${path}${key}: unknown field`);
}

/**
 * Checks a `POST /agent/v1/svids/x509` body as the ValidationPipe would (unknown fields refused, every failure
 * listed) and returns the requests in order. Only the shape: the signing service checks entries and CSRs.
 *
 * @throws AppError `invalid_argument` with every failure as `<field>: <what>`, joined by `; `
 */
export function parseBatchX509SvidBody(body: unknown): X509SvidRequest[] {
  if (!isPlainObject(body)) throw new AppError('invalid_argument', 'body: must be a json object');
  const failures = unknownFields(body, BATCH_FIELDS, '');
  const csrs = body['csrs'];
  if (!Array.isArray(csrs) || csrs.length < 1 || csrs.length > MAX_CSR_BATCH) {
    const got = Array.isArray(csrs) ? `${csrs.length} items` : csrs === null ? 'null' : typeof csrs;
    failures.push(`csrs: must be an array of 1 to ${MAX_CSR_BATCH} requests, got ${got}`);
    throw new AppError('invalid_argument', failures.join('; '));
  }
  const requests: X509SvidRequest[] = new Array<X509SvidRequest>(csrs.length);
  for (let index = 0; index < csrs.length; index++) {
    const item: unknown = csrs[index];
    const path = `csrs.${index}`;
    if (!isPlainObject(item)) {
      failures.push(`${path}: must be an object with entry_id and csr`);
      continue;
    }
    for (const key in item) if (!REQUEST_FIELDS.has(key)) failures.push(`${path}.${key}: unknown field`);
    const { entry_id: entryId, csr } = item;
    if (typeof entryId !== 'string') failures.push(`${path}.entry_id: must be a string`);
    if (typeof csr !== 'string') failures.push(`${path}.csr: must be a string`);
    else if (csr.length > CSR_MAX_BYTES) failures.push(`${path}.csr: must be at most ${CSR_MAX_BYTES} characters`);
    if (typeof entryId === 'string' && typeof csr === 'string') requests[index] = { entryId, csr };
  }
  if (failures.length > 0) throw new AppError('invalid_argument', failures.join('; '));
  return requests;
}

export class JwtSvidRequestDto {
  @ApiProperty({ format: 'uuid' })
  @IsString()
  entry_id!: string;

  @ApiProperty({
    type: [String],
    maxItems: JWT_SVID_MAX_AUDIENCES,
    description: `at most ${JWT_SVID_MAX_AUDIENCES} audiences of at most ${JWT_SVID_MAX_AUDIENCE_BYTES} bytes each`,
  })
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(JWT_SVID_MAX_AUDIENCES)
  @IsString({ each: true })
  @IsNotEmpty({ each: true })
  // Characters here (a shape check); the CA checks the exact byte rule, jwtAudienceProblem.
  @MaxLength(JWT_SVID_MAX_AUDIENCE_BYTES, { each: true })
  audience!: string[];
}

export class AgentSvidResponseDto {
  @ApiProperty() spiffe_id!: string;
  @ApiProperty({ type: [String], description: 'base64 DER certificates, leaf first' }) svid!: string[];
  @ApiProperty({ format: 'date-time' }) expires_at!: string;
}

export class AttestationResponseDto extends AgentSvidResponseDto {
  @ApiProperty({ type: Object, description: 'our trust bundle, SPIFFE JWKS' }) bundle!: SpiffeJwks;
}

export class X509popChallengeResponseDto {
  @ApiProperty({ format: 'uuid' }) challenge_id!: string;
  @ApiProperty({ description: `base64 of 32 random bytes to sign` }) nonce!: string;
}

export class SyncResponseDto {
  @ApiProperty() revision!: number;
  @ApiProperty({ description: 'true: `entries` is every authorised entry, replacing what the agent holds' })
  full!: boolean;

  @ApiProperty({ type: [EntryResponseDto] }) entries!: EntryResponseDto[];
  @ApiProperty({ type: [String] }) deleted_ids!: string[];
  @ApiProperty({ type: Object, description: 'our trust bundle, SPIFFE JWKS with spiffe_sequence' }) bundle!: SpiffeJwks;
  @ApiProperty({ type: Object, description: 'by `spiffe://<trust domain>`' })
  federated_bundles!: Record<string, SpiffeJwks>;
}

export class SvidStatusDto {
  @ApiProperty({ description: "'ok', or the error kind (permission_denied, invalid_argument, ...)" })
  code!: 'ok' | AppErrorKind;

  @ApiProperty() message!: string;
}

export class X509SvidResultDto {
  @ApiProperty() entry_id!: string;
  @ApiProperty({ type: SvidStatusDto }) status!: SvidStatusDto;
  @ApiPropertyOptional({ type: [String], description: 'base64 DER certificates, leaf first' }) svid?: string[];
  @ApiPropertyOptional({ format: 'date-time' }) expires_at?: string;
}

export class BatchX509SvidResponseDto {
  @ApiProperty({ type: [X509SvidResultDto] }) results!: X509SvidResultDto[];
}

export class JwtSvidResponseDto {
  @ApiProperty() spiffe_id!: string;
  @ApiProperty() token!: string;
  @ApiProperty({ format: 'date-time' }) expires_at!: string;
}

/** Base64 of each certificate, without copying the bytes first. */
const base64Chain = (chain: readonly Uint8Array[]): string[] =>
  chain.map((der) => Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64'));

export function toAgentSvidResponse(svid: IssuedAgentSvid): AgentSvidResponseDto {
  return {
    spiffe_id: svid.spiffeId,
    svid: base64Chain(svid.certificateChainDer),
    expires_at: svid.expiresAt.toISOString(),
  };
}

export function toAttestationResponse(result: { svid: IssuedAgentSvid; bundle: SpiffeJwks }): AttestationResponseDto {
  return { ...toAgentSvidResponse(result.svid), bundle: result.bundle };
}

export function toSyncResponse(result: SyncResult): SyncResponseDto {
  const { delta } = result;
  return {
    revision: delta.revision,
    full: delta.full,
    entries: delta.entries.map(toEntryResponse),
    deleted_ids: delta.full ? [] : [...delta.deletedIds],
    bundle: result.bundle,
    federated_bundles: Object.fromEntries(
      [...result.federatedBundles].map(([trustDomain, jwks]) => [`spiffe://${trustDomain}`, jwks]),
    ),
  };
}

export function toBatchX509SvidResponse(results: readonly X509SvidResult[]): BatchX509SvidResponseDto {
  return {
    results: results.map((result) =>
      result.ok
        ? {
            entry_id: result.entryId,
            status: { code: 'ok', message: 'ok' },
            svid: base64Chain(result.certificateChainDer),
            expires_at: result.expiresAt.toISOString(),
          }
        : { entry_id: result.entryId, status: { code: result.error.kind, message: result.error.message } },
    ),
  };
}

export function toJwtSvidResponse(signed: SignedEntryJwtSvid): JwtSvidResponseDto {
  return { spiffe_id: signed.spiffeId, token: signed.token, expires_at: signed.expiresAt.toISOString() };
}
