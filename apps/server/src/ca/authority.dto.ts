import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsBoolean, IsIn, IsOptional, IsString, Length } from 'class-validator';
import type { AuthorityKey } from './authority-key.js';
import type { AuthoritySlots } from './key-manager.js';
import type { AuthorityKind } from './ca-key.js';

export class AuthorityKindParams {
  @ApiProperty({ enum: ['x509', 'jwt'] })
  @IsIn(['x509', 'jwt'], { message: 'kind must be x509 or jwt' })
  kind!: AuthorityKind;
}

export class AuthorityIdBody {
  @ApiProperty({ description: 'the X.509 CA subject key identifier (hex) or the JWT key id (kid)' })
  @IsString()
  @Length(1, 256)
  authority_id!: string;
}

export class RevokeAuthorityBody extends AuthorityIdBody {
  @ApiPropertyOptional({
    default: false,
    description:
      'revoke even while agents report SVIDs issued by the key that have not expired: they fail verification at once',
  })
  @IsOptional()
  @IsBoolean({ message: 'force must be a boolean' })
  force?: boolean;
}

export class AuthorityResponse {
  @ApiProperty({ description: 'X.509: subject key identifier (hex); JWT: kid' }) authority_id!: string;
  @ApiProperty({ enum: ['prepared', 'active', 'old'] }) state!: string;
  @ApiProperty({ enum: ['ec-p256', 'ec-p384', 'rsa-2048'] }) key_type!: string;
  @ApiProperty({ format: 'date-time' }) not_before!: string;
  @ApiProperty({ format: 'date-time' }) expires_at!: string;
  @ApiProperty({ format: 'date-time', nullable: true, type: String }) activated_at!: string | null;
  @ApiProperty() tainted!: boolean;
  @ApiProperty() revoked!: boolean;
  @ApiPropertyOptional({ description: 'X.509 under an upstream CA: whether the bundle holds the upstream root' })
  upstream_signed?: boolean;
}

export class AuthorityStateResponse {
  @ApiProperty({ type: AuthorityResponse, nullable: true }) active!: AuthorityResponse | null;
  @ApiProperty({ type: AuthorityResponse, nullable: true }) prepared!: AuthorityResponse | null;
  @ApiProperty({ type: [AuthorityResponse] }) old!: AuthorityResponse[];
}

export function toAuthorityResponse(key: AuthorityKey): AuthorityResponse {
  return {
    authority_id: key.authorityId,
    state: key.state,
    key_type: key.keyType,
    not_before: key.notBefore.toISOString(),
    expires_at: key.notAfter.toISOString(),
    activated_at: key.activatedAt?.toISOString() ?? null,
    tainted: key.tainted,
    revoked: key.revoked,
    ...(key.kind === 'x509' && { upstream_signed: key.upstreamChainDer.length > 0 }),
  };
}

export function toAuthorityStateResponse(slots: AuthoritySlots): AuthorityStateResponse {
  return {
    active: slots.active === undefined ? null : toAuthorityResponse(slots.active),
    prepared: slots.prepared === undefined ? null : toAuthorityResponse(slots.prepared),
    old: slots.old.map(toAuthorityResponse),
  };
}
