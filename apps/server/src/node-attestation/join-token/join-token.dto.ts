import { ApiProperty } from '@nestjs/swagger';
import { JOIN_TOKEN_MAX_LENGTH, type JoinTokenAttestationBody } from '@sigil/agent-api';
import { CSR_MAX_BYTES } from '@sigil/pki';
import { IsNotEmpty, IsString, MaxLength } from 'class-validator';

export class JoinTokenAttestationDto implements JoinTokenAttestationBody {
  @ApiProperty({ description: 'the join token (secret), as `token generate` printed it' })
  @IsString()
  @IsNotEmpty()
  @MaxLength(JOIN_TOKEN_MAX_LENGTH)
  token!: string;

  @ApiProperty({ description: "PEM PKCS#10 request for the agent's key; a URI SAN is not needed" })
  @IsString()
  @MaxLength(CSR_MAX_BYTES)
  csr!: string;
}
