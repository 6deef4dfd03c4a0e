import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import type { SpiffeJwks } from '@sigil/spiffe';
import { IsIn, IsOptional, IsString } from 'class-validator';
import { PageQuery } from '../common/page-query.dto.js';
import type { FederatedBundle } from '../bundle/bundle.service.js';
import { BUNDLE_ENDPOINT_PROFILES } from '../config.js';
import { FEDERATED_BUNDLE_FORMATS, type FederatedBundleFormat } from './federated-bundle-rules.js';
import type { StoredFederationRelationship } from './federation-relationships.service.js';

export const FEDERATED_BUNDLE_PAGE_SIZE = { default: 100, max: 1000 } as const;

export const DELETE_MODES = ['restrict', 'delete', 'dissociate'] as const;
export type DeleteMode = (typeof DELETE_MODES)[number];

/** `PUT /v1/federation/bundles/:trust_domain`: the bundle, as SPIRE's `bundle set` reads it. */
export class SetFederatedBundleDto {
  @ApiPropertyOptional({
    enum: FEDERATED_BUNDLE_FORMATS,
    default: 'pem',
    description: 'pem: CA certificates as PEM; spiffe: a SPIFFE bundle (JWKS) as JSON text',
  })
  @IsOptional()
  @IsIn(FEDERATED_BUNDLE_FORMATS, { message: 'format must be pem or spiffe' })
  format?: FederatedBundleFormat;

  @ApiProperty({ description: 'the PEM or JSON text of the bundle' })
  @IsString({ message: 'bundle must be a string (the PEM or JSON text)' })
  bundle!: string;
}

export class ListFederatedBundlesQuery extends PageQuery(FEDERATED_BUNDLE_PAGE_SIZE) {}

export class DeleteFederatedBundleQuery {
  @ApiPropertyOptional({
    enum: DELETE_MODES,
    default: 'restrict',
    description:
      'restrict: refuse while entries federate with the trust domain; delete: delete those entries too; dissociate: remove the trust domain from their federates_with',
  })
  @IsOptional()
  @IsIn(DELETE_MODES, { message: 'mode must be restrict, delete or dissociate' })
  mode?: DeleteMode;
}

export class FederatedBundleResponse {
  @ApiProperty() trust_domain!: string;
  @ApiProperty({ description: 'the SPIFFE bundle (JWKS) with spiffe_sequence and spiffe_refresh_hint when set' })
  bundle!: SpiffeJwks;
  @ApiProperty() updated_at!: string;
}

export class FederatedBundleListResponse {
  @ApiProperty({ type: [FederatedBundleResponse] }) bundles!: FederatedBundleResponse[];
  @ApiPropertyOptional() next_page_token?: string;
}

export class FederatedBundleCountResponse {
  @ApiProperty() count!: number;
}

export class DeleteFederatedBundleResponse {
  @ApiProperty() trust_domain!: string;
  @ApiProperty({ enum: DELETE_MODES }) mode!: DeleteMode;
  @ApiProperty({ type: [String], description: 'entries deleted (delete) or no longer federating (dissociate)' })
  entry_ids!: string[];
}

export function toFederatedBundleResponse({ bundle, updatedAt }: FederatedBundle): FederatedBundleResponse {
  return { trust_domain: bundle.trustDomain.name, bundle: bundle.toJwks(), updated_at: updatedAt.toISOString() };
}

/** `PUT /v1/federation/relationships/:trust_domain`: the endpoint settings (SPIRE's `federation update`). */
export class FederationRelationshipSettingsDto {
  @ApiProperty({ description: 'https:// URL of the foreign bundle endpoint' })
  @IsString({ message: 'bundle_endpoint_url must be a string' })
  bundle_endpoint_url!: string;

  @ApiProperty({ enum: BUNDLE_ENDPOINT_PROFILES })
  @IsString({ message: 'bundle_endpoint_profile must be a string' })
  bundle_endpoint_profile!: string;

  @ApiPropertyOptional({ description: "https_spiffe only: the SPIFFE ID of the endpoint's server" })
  @IsOptional()
  @IsString({ message: 'endpoint_spiffe_id must be a string' })
  endpoint_spiffe_id?: string;
}

/** `POST /v1/federation/relationships` (SPIRE's `federation create`). */
export class CreateFederationRelationshipDto extends FederationRelationshipSettingsDto {
  @ApiProperty({ description: 'the foreign trust domain (name or spiffe:// ID)' })
  @IsString({ message: 'trust_domain must be a string' })
  trust_domain!: string;
}

export class FederationRelationshipResponse {
  @ApiProperty() trust_domain!: string;
  @ApiProperty() bundle_endpoint_url!: string;
  @ApiProperty({ enum: BUNDLE_ENDPOINT_PROFILES }) bundle_endpoint_profile!: string;
  @ApiPropertyOptional() endpoint_spiffe_id?: string;
  @ApiProperty() created_at!: string;
  @ApiProperty() updated_at!: string;
}

export class FederationRelationshipListResponse {
  @ApiProperty({ type: [FederationRelationshipResponse] }) relationships!: FederationRelationshipResponse[];
}

export function toFederationRelationshipResponse(
  relationship: StoredFederationRelationship,
): FederationRelationshipResponse {
  return {
    trust_domain: relationship.trustDomain.name,
    bundle_endpoint_url: relationship.bundleEndpointUrl,
    bundle_endpoint_profile: relationship.bundleEndpointProfile,
    ...(relationship.endpointSpiffeId && { endpoint_spiffe_id: relationship.endpointSpiffeId.toString() }),
    created_at: relationship.createdAt.toISOString(),
    updated_at: relationship.updatedAt.toISOString(),
  };
}

/** `POST /v1/federation/relationships/:trust_domain/refresh` (SPIRE's `federation refresh`). */
export class BundleRefreshResponse {
  @ApiProperty() trust_domain!: string;
  @ApiProperty({ description: 'true when the fetched bundle differed from the stored one and replaced it' })
  changed!: boolean;
  @ApiProperty({ description: 'the bundle now stored (SPIFFE JWKS)' })
  bundle!: SpiffeJwks;
}
