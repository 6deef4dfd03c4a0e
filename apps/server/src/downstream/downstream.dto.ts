import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import { IsDefined, IsInt, IsObject, IsOptional, IsString, Max, MaxLength, Min, ValidateNested } from 'class-validator';
import { CSR_MAX_BYTES } from '@sigil/pki';
import type {
  DownstreamAuthoritiesResponseBody,
  DownstreamJwtAuthorityBody,
  DownstreamJwtAuthorityRequestBody,
  DownstreamJwtAuthorityResponseBody,
  DownstreamX509CaRequestBody,
  DownstreamX509CaResponseBody,
} from './downstream-contract.js';

const MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;

export class DownstreamX509CaRequest implements DownstreamX509CaRequestBody {
  @ApiProperty({ description: "PKCS#10 CSR of the downstream server's CA key, base64 DER; only its key is used" })
  @IsString()
  @MaxLength(CSR_MAX_BYTES * 2)
  csr!: string;

  @ApiPropertyOptional({ description: 'seconds; 0 or absent: downstream_ca_max_ttl; never beyond it nor our CA' })
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(MAX_TTL_SECONDS)
  preferred_ttl?: number;
}

export class DownstreamX509CaResponse implements DownstreamX509CaResponseBody {
  @ApiProperty({ type: [String], description: 'base64 DER: the new CA certificate, then the certificates above it' })
  ca_cert_chain!: string[];
  @ApiProperty({ type: [String], description: 'base64 DER: the X.509 authorities (roots) of the trust bundle' })
  x509_authorities!: string[];
  @ApiProperty({ format: 'date-time' }) expires_at!: string;
}

export class DownstreamAuthoritiesResponse implements DownstreamAuthoritiesResponseBody {
  @ApiProperty({
    type: [String],
    description:
      "authority IDs of the upstream server's tainted keys: a nested CA one of them signed moves to a new CA",
  })
  tainted_authorities!: string[];
  @ApiProperty({
    type: [String],
    description: "base64 DER: this trust domain's X.509 authorities now, which a nested server publishes as its own",
  })
  x509_authorities!: string[];

  @ApiProperty({
    type: () => [DownstreamJwtAuthority],
    description: "this trust domain's JWT authorities now (ours and those downstream servers published)",
  })
  jwt_authorities!: DownstreamJwtAuthority[];
}

/** A JWT authority on the wire (SPIRE's `JWTKey`); its meaning is checked by `parseJwtAuthority`. */
export class DownstreamJwtAuthority implements DownstreamJwtAuthorityBody {
  @ApiProperty({ description: "the key's kid: 1 to 128 characters of A-Z a-z 0-9 - _" })
  @IsString()
  @MaxLength(128)
  key_id!: string;

  @ApiProperty({ description: 'SubjectPublicKeyInfo DER, base64: EC P-256, EC P-384 or RSA 2048' })
  @IsString()
  @MaxLength(1024)
  public_key!: string;

  @ApiProperty({ description: 'unix seconds; at most downstream_ca_max_ttl from now' })
  @IsInt()
  @Min(1)
  expires_at!: number;
}

export class DownstreamJwtAuthorityRequest implements DownstreamJwtAuthorityRequestBody {
  @ApiProperty({
    type: () => DownstreamJwtAuthority,
    description: "the public part of the nested server's new JWT key",
  })
  @IsDefined()
  @IsObject()
  @ValidateNested()
  @Type(() => DownstreamJwtAuthority)
  jwt_authority!: DownstreamJwtAuthority;
}

export class DownstreamJwtAuthorityResponse implements DownstreamJwtAuthorityResponseBody {
  @ApiProperty({ type: () => [DownstreamJwtAuthority], description: "this trust domain's JWT authorities now" })
  jwt_authorities!: DownstreamJwtAuthority[];
}
