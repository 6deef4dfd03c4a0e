import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsInt, IsOptional, IsString, MaxLength, Min } from 'class-validator';
import { type AdminTokenInfo } from './admin-tokens.service.js';

export class CreateAdminTokenRequest {
  @ApiProperty({ description: 'unique name of the token, recorded as the actor in the audit log' })
  @IsString()
  @MaxLength(64)
  name!: string;

  @ApiPropertyOptional({ description: 'seconds until the token expires; absent: it never expires' })
  @IsOptional()
  @IsInt()
  @Min(1)
  ttl?: number;
}

export class AdminTokenResponse {
  @ApiProperty() name!: string;
  @ApiProperty({ format: 'date-time' }) created_at!: string;
  @ApiProperty({ format: 'date-time', nullable: true, type: String }) expires_at!: string | null;
  @ApiProperty({ format: 'date-time', nullable: true, type: String }) last_used_at!: string | null;
}

export class CreatedAdminTokenResponse extends AdminTokenResponse {
  @ApiProperty({ description: 'the bearer token; shown only in this response, the server keeps only its hash' })
  token!: string;
}

export class AdminTokenListResponse {
  @ApiProperty({ type: [AdminTokenResponse] }) admin_tokens!: AdminTokenResponse[];
}

export function toAdminTokenResponse(info: AdminTokenInfo): AdminTokenResponse {
  return {
    name: info.name,
    created_at: info.createdAt.toISOString(),
    expires_at: info.expiresAt?.toISOString() ?? null,
    last_used_at: info.lastUsedAt?.toISOString() ?? null,
  };
}
