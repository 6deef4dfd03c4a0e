import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsInt, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';
import { JOIN_TOKEN_TTL_BOUNDS } from './join-tokens.service.js';

export class CreateJoinTokenRequest {
  @ApiPropertyOptional({ description: 'SPIFFE ID the agent attesting with this token is also known by' })
  @IsOptional()
  @IsString()
  @MaxLength(2048)
  spiffe_id?: string;

  @ApiPropertyOptional({ description: 'seconds until the token expires (default: the server join token TTL, 600)' })
  @IsOptional()
  @IsInt()
  @Min(JOIN_TOKEN_TTL_BOUNDS.min)
  @Max(JOIN_TOKEN_TTL_BOUNDS.max)
  ttl?: number;
}

export class JoinTokenResponse {
  @ApiProperty({ description: 'non-secret id of the token' })
  id!: string;

  @ApiProperty({ description: 'the token; shown only in this response, the server keeps only its hash' })
  token!: string;

  @ApiProperty({ format: 'date-time' })
  expires_at!: string;

  @ApiProperty({ nullable: true, type: String })
  spiffe_id!: string | null;
}
