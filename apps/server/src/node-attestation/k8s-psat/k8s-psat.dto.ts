import { ApiProperty } from '@nestjs/swagger';
import { K8S_PSAT_CLUSTER_MAX_LENGTH, K8S_PSAT_TOKEN_MAX_LENGTH, type K8sPsatAttestationBody } from '@sigil/agent-api';
import { CSR_MAX_BYTES } from '@sigil/pki';
import { IsNotEmpty, IsString, MaxLength } from 'class-validator';

export class K8sPsatAttestationDto implements K8sPsatAttestationBody {
  @ApiProperty({ description: "the cluster the agent runs in, as the server's k8s_psat attestor names it" })
  @IsString()
  @IsNotEmpty()
  @MaxLength(K8S_PSAT_CLUSTER_MAX_LENGTH)
  cluster!: string;

  @ApiProperty({ description: "the projected service account token of the agent's pod (secret)" })
  @IsString()
  @IsNotEmpty()
  @MaxLength(K8S_PSAT_TOKEN_MAX_LENGTH)
  token!: string;

  @ApiProperty({ description: "PEM PKCS#10 request for the agent's key; a URI SAN is not needed" })
  @IsString()
  @MaxLength(CSR_MAX_BYTES)
  csr!: string;
}
