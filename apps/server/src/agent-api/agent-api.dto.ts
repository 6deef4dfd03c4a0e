import { ApiProperty, ApiPropertyOptional, OmitType } from '@nestjs/swagger';
import {
  CSR_MAX_BYTES,
  JWT_SVID_MAX_AUDIENCES,
  JWT_SVID_MAX_AUDIENCE_BYTES,
  MAX_CSR_BATCH,
  type AgentSvidSource,
  type AgentSvidWire,
  type AttestationResponseWire,
  type BatchX509SvidRequestWire,
  type BatchX509SvidResponseWire,
  type ErrorKind,
  type JwtSvidRequestWire,
  type JwtSvidResponseWire,
  type RenewRequestWire,
  type SvidStatusWire,
  type SyncEntryWire,
  type SyncQueryWire,
  type SyncResponseWire,
  type X509SvidRequestWire,
  type X509SvidResultWire,
} from '@sigil/agent-api';
import type { SpiffeJwks } from '@sigil/spiffe';
import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsInt,
  IsNotEmpty,
  IsOptional,
  IsString,
  MaxLength,
  Min,
} from 'class-validator';
import { EntryResponseDto } from '../entries/entry.dto.js';
import type { IssuedAgentSvid } from './agent-svid.service.js';

/*
 * The agent API's messages are defined once, in @sigil/agent-api (wire types, limits, parse and serialize). These
 * classes implement its wire types for two jobs of the server only: the ValidationPipe's checks of request bodies
 * (shape; the services check meaning: CSR signatures, authorisation, chains) and the OpenAPI document.
 */

export class RenewAgentSvidDto implements RenewRequestWire {
  @ApiProperty({ description: 'PEM PKCS#10 request for the renewed SVID' })
  @IsString()
  @MaxLength(CSR_MAX_BYTES)
  csr!: string;
}

export class SyncQueryDto implements SyncQueryWire {
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

  @ApiPropertyOptional({
    maxLength: 8192,
    description:
      'the authorities that issued the SVIDs the agent holds: `<authority id>:<latest expiry, unix seconds>` joined by `,`',
  })
  @IsOptional()
  @IsString()
  @MaxLength(8192)
  svid_issuers?: string;
}

/** The shape of one CSR of a batch, for the OpenAPI document; `parseX509SvidBatchRequest` checks it. */
export class X509SvidRequestDto implements X509SvidRequestWire {
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
 * `parseX509SvidBatchRequest` of @sigil/agent-api checks the body instead of the ValidationPipe.
 */
export class BatchX509SvidDto implements BatchX509SvidRequestWire {
  @ApiProperty({ type: [X509SvidRequestDto], minItems: 1, maxItems: MAX_CSR_BATCH })
  csrs!: X509SvidRequestDto[];
}

export class JwtSvidRequestDto implements JwtSvidRequestWire {
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

export class AgentSvidResponseDto implements AgentSvidWire {
  @ApiProperty() spiffe_id!: string;
  @ApiProperty({ type: [String], description: 'base64 DER certificates, leaf first' }) svid!: string[];
  @ApiProperty({ format: 'date-time' }) expires_at!: string;
}

export class AttestationResponseDto extends AgentSvidResponseDto implements AttestationResponseWire {
  @ApiProperty({ type: Object, description: 'our trust bundle, SPIFFE JWKS' }) bundle!: SpiffeJwks;
}

/** An entry as the sync lists it: what an agent needs, the admin API's entry without `updated_at`. */
export class SyncEntryDto extends OmitType(EntryResponseDto, ['updated_at'] as const) implements SyncEntryWire {}

export class SyncResponseDto implements SyncResponseWire {
  @ApiProperty() revision!: number;
  @ApiProperty({ description: 'true: `entries` is every authorised entry, replacing what the agent holds' })
  full!: boolean;

  @ApiProperty({ type: [SyncEntryDto] }) entries!: SyncEntryDto[];
  @ApiProperty({ type: [String] }) deleted_ids!: string[];
  @ApiProperty({ type: Object, description: 'our trust bundle, SPIFFE JWKS with spiffe_sequence' }) bundle!: SpiffeJwks;
  @ApiProperty({ type: Object, description: 'by `spiffe://<trust domain>`' })
  federated_bundles!: Record<string, SpiffeJwks>;
  @ApiProperty({
    type: [String],
    description:
      "authority IDs of our tainted keys: the agent re-signs every SVID they issued (SPIRE's forced rotation)",
  })
  tainted_authorities!: string[];
}

export class SvidStatusDto implements SvidStatusWire {
  @ApiProperty({ description: "'ok', or the error kind (permission_denied, invalid_argument, ...)" })
  code!: 'ok' | ErrorKind;

  @ApiProperty() message!: string;
}

export class X509SvidResultDto implements X509SvidResultWire {
  @ApiProperty() entry_id!: string;
  @ApiProperty({ type: SvidStatusDto }) status!: SvidStatusDto;
  @ApiPropertyOptional({ type: [String], description: 'base64 DER certificates, leaf first' }) svid?: string[];
  @ApiPropertyOptional({ format: 'date-time' }) expires_at?: string;
}

export class BatchX509SvidResponseDto implements BatchX509SvidResponseWire {
  @ApiProperty({ type: [X509SvidResultDto] }) results!: X509SvidResultDto[];
}

export class JwtSvidResponseDto implements JwtSvidResponseWire {
  @ApiProperty() spiffe_id!: string;
  @ApiProperty() token!: string;
  @ApiProperty({ format: 'date-time' }) expires_at!: string;
}

/** An issued agent SVID in the form the contract's serializers read. */
export function agentSvidSource(svid: IssuedAgentSvid): AgentSvidSource {
  return { spiffeId: svid.spiffeId, chain: svid.certificateChainDer, expiresAt: svid.expiresAt };
}
