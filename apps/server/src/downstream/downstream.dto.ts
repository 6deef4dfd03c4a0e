import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsInt, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';
import { CSR_MAX_BYTES } from '@sigil/pki';
import type {
  DownstreamAuthoritiesResponseBody,
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
}
