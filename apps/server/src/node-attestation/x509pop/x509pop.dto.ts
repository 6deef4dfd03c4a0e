import { ApiProperty } from '@nestjs/swagger';
import type { X509popAnswerBody, X509popChallengeBody, X509popChallengeRequestBody } from '@sigil/agent-api';
import { CSR_MAX_BYTES } from '@sigil/pki';
import { ArrayMaxSize, ArrayMinSize, IsArray, IsBase64, IsString, IsUUID, MaxLength } from 'class-validator';
import { X509POP_MAX_CERTIFICATES } from './x509pop.js';

/** Longest base64 certificate of an x509pop chain. */
const MAX_CERTIFICATE_BASE64 = 16 * 1024;

export class X509popChallengeRequestDto implements X509popChallengeRequestBody {
  @ApiProperty({ type: [String], description: 'base64 DER certificates: the leaf, then intermediates' })
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(X509POP_MAX_CERTIFICATES)
  @IsBase64(undefined, { each: true })
  @MaxLength(MAX_CERTIFICATE_BASE64, { each: true })
  certificates!: string[];
}

export class X509popChallengeResponseDto implements X509popChallengeBody {
  @ApiProperty({ format: 'uuid' }) challenge_id!: string;
  @ApiProperty({ description: `base64 of 32 random bytes to sign` }) nonce!: string;
}

export class X509popAttestationDto implements X509popAnswerBody {
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
