import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Transform } from 'class-transformer';
import { IsBoolean, IsIn, IsInt, IsISO8601, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';
import { PageQuery } from '../common/page-query.dto.js';
import { parseSelectorQuery } from '../entries/entry-rules.js';
import { type AgentFilter } from './agents.repository.js';
import { AGENT_PAGE_SIZE, type AttestedAgent } from './agents.service.js';

export class ListAgentsQuery extends PageQuery(AGENT_PAGE_SIZE) {
  @ApiPropertyOptional({ description: 'only agents attested this way, e.g. join_token or x509pop' })
  @IsOptional()
  @IsString()
  @MaxLength(64)
  attestation_type?: string;

  @ApiPropertyOptional({ enum: ['true', 'false'] })
  @IsOptional()
  @IsIn(['true', 'false'])
  banned?: 'true' | 'false';

  @ApiPropertyOptional({ format: 'date-time', description: 'only agents whose SVID expires before this time' })
  @IsOptional()
  @IsISO8601({ strict: true, strictSeparator: true })
  expires_before?: string;

  @ApiPropertyOptional({ enum: ['true', 'false'], description: 'only agents that can (or cannot) attest again' })
  @IsOptional()
  @IsIn(['true', 'false'])
  can_reattest?: 'true' | 'false';

  @ApiPropertyOptional({ type: [String], description: 'type:value; repeat to require several (all must match)' })
  @IsOptional()
  @Transform(({ value }: { value: unknown }) => (Array.isArray(value) ? value : [value]))
  @IsString({ each: true })
  selector?: string[];
}

export function toAgentFilter(query: Omit<ListAgentsQuery, 'page_size' | 'page_token'>): AgentFilter {
  return {
    ...(query.attestation_type !== undefined && { attestationType: query.attestation_type }),
    ...(query.banned !== undefined && { banned: query.banned === 'true' }),
    ...(query.can_reattest !== undefined && { canReattest: query.can_reattest === 'true' }),
    ...(query.expires_before !== undefined && { expiresBefore: new Date(query.expires_before) }),
    ...(query.selector !== undefined && {
      selectors: query.selector.map((selector, index) => parseSelectorQuery(selector, `selector.${index}`)),
    }),
  };
}

export class AgentSelectorResponse {
  @ApiProperty() type!: string;
  @ApiProperty() value!: string;
}

export class AgentResponse {
  @ApiProperty() spiffe_id!: string;
  @ApiProperty() attestation_type!: string;
  @ApiProperty({ description: 'serial number (hex) of the current agent X509-SVID' }) serial_number!: string;
  @ApiProperty({ format: 'date-time' }) svid_expires_at!: string;
  @ApiProperty({
    description:
      'serial number (hex) of the renewed agent X509-SVID not used yet (accepted beside the current one until ' +
      'its first use makes it current); null when no renewal is pending',
    nullable: true,
    type: String,
  })
  new_serial_number!: string | null;
  @ApiProperty({ format: 'date-time', nullable: true, type: String }) new_svid_expires_at!: string | null;
  @ApiProperty({ type: [AgentSelectorResponse] }) selectors!: AgentSelectorResponse[];
  @ApiProperty() banned!: boolean;
  @ApiProperty({ description: 'whether it may attest again under this ID' }) can_reattest!: boolean;
  @ApiProperty({ format: 'date-time' }) created_at!: string;
  @ApiProperty({ format: 'date-time' }) updated_at!: string;
  @ApiProperty({ format: 'date-time', nullable: true, type: String }) last_seen_at!: string | null;
}

export class AgentListResponse {
  @ApiProperty({ type: [AgentResponse] }) agents!: AgentResponse[];
  @ApiPropertyOptional() next_page_token?: string;
}

export class AgentCountResponse {
  @ApiProperty() count!: number;
}

export function toAgentResponse(agent: AttestedAgent): AgentResponse {
  return {
    spiffe_id: agent.spiffeId,
    attestation_type: agent.attestationType,
    serial_number: agent.serialNumber,
    svid_expires_at: agent.svidExpiresAt.toISOString(),
    new_serial_number: agent.newSerialNumber,
    new_svid_expires_at: agent.newSvidExpiresAt?.toISOString() ?? null,
    selectors: agent.selectors.map(({ type, value }) => ({ type, value })),
    banned: agent.banned,
    can_reattest: agent.canReattest,
    created_at: agent.createdAt.toISOString(),
    updated_at: agent.updatedAt.toISOString(),
    last_seen_at: agent.lastSeenAt?.toISOString() ?? null,
  };
}

/** Ten years: longer than any agent SVID lives. */
const MAX_EXPIRED_FOR_SECONDS = 10 * 365 * 24 * 3600;

export class PurgeAgentsRequest {
  @ApiProperty({ description: 'seconds since the agent SVID expired', minimum: 0, maximum: MAX_EXPIRED_FOR_SECONDS })
  @IsInt()
  @Min(0)
  @Max(MAX_EXPIRED_FOR_SECONDS)
  expired_for!: number;

  @ApiPropertyOptional({ description: 'only name the agents that would be removed' })
  @IsOptional()
  @IsBoolean()
  dry_run?: boolean;
}

export class ExpiredAgentResponse {
  @ApiProperty() agent_id!: string;
  @ApiProperty({ description: 'false on a dry run' }) deleted!: boolean;
}

/** SPIRE's `agent purge -output json` shape. */
export class PurgeAgentsResponse {
  @ApiProperty({ type: [ExpiredAgentResponse] }) expired_agents!: ExpiredAgentResponse[];
}
