import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { ArrayMaxSize, IsArray, IsInt, IsOptional, IsString, MaxLength } from 'class-validator';
import { CSR_MAX_BYTES } from '@sigil/pki';
import { JWT_SVID_MAX_AUDIENCES } from '@sigil/runtime';

export class MintX509SvidRequest {
  @ApiProperty({
    description:
      'PKCS#10 certificate signing request, PEM or base64 DER: its one URI SAN is the SPIFFE ID, its DNS SANs become ' +
      "the SVID's; the caller keeps the private key",
  })
  @IsString()
  @MaxLength(CSR_MAX_BYTES * 2)
  csr!: string;

  @ApiPropertyOptional({ description: 'seconds; 0 or absent: the server X.509-SVID TTL; never beyond the CA' })
  @IsOptional()
  @IsInt()
  ttl?: number;
}

export class MintX509SvidResponse {
  @ApiProperty() spiffe_id!: string;
  @ApiProperty({ type: [String], description: 'base64 DER certificates, leaf first (then any intermediates)' })
  cert_chain!: string[];
  @ApiProperty({ format: 'date-time' }) expires_at!: string;
}

export class MintJwtSvidRequest {
  @ApiProperty({ description: "SPIFFE ID in the server's trust domain" })
  @IsString()
  @MaxLength(2048)
  spiffe_id!: string;

  @ApiProperty({ type: [String] })
  @IsArray()
  @ArrayMaxSize(JWT_SVID_MAX_AUDIENCES)
  @IsString({ each: true })
  audience!: string[];

  @ApiPropertyOptional({ description: 'seconds; 0 or absent: the server JWT-SVID TTL; never beyond the JWT key' })
  @IsOptional()
  @IsInt()
  ttl?: number;
}

export class MintJwtSvidResponse {
  @ApiProperty() spiffe_id!: string;
  @ApiProperty({ description: 'the JWT-SVID (a bearer token: shown only in this response, never logged)' })
  token!: string;
  @ApiProperty({ format: 'date-time' }) expires_at!: string;
}
