import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Transform, Type } from 'class-transformer';
import { IsIn, IsInt, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';
import { parseSelectorQuery } from '../entries/entry-rules.js';
import { type AgentFilter } from './agents.repository.js';
import { AGENT_PAGE_SIZE, type AttestedAgent } from './agents.service.js';

export class ListAgentsQuery {
  @ApiPropertyOptional({ description: 'only agents attested this way, e.g. join_token or x509pop' })
  @IsOptional()
  @IsString()
  @MaxLength(64)
  attestation_type?: string;

  @ApiPropertyOptional({ enum: ['true', 'false'] })
  @IsOptional()
  @IsIn(['true', 'false'])
  banned?: 'true' | 'false';

  @ApiPropertyOptional({ type: [String], description: 'type:value; repeat to require several (all must match)' })
  @IsOptional()
  @Transform(({ value }: { value: unknown }) => (Array.isArray(value) ? value : [value]))
  @IsString({ each: true })
  selector?: string[];

  @ApiPropertyOptional({ minimum: 1, maximum: AGENT_PAGE_SIZE.max, default: AGENT_PAGE_SIZE.default })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(AGENT_PAGE_SIZE.max)
  page_size?: number;

  @ApiPropertyOptional({ description: 'next_page_token of the previous page' })
  @IsOptional()
  @IsString()
  @MaxLength(4096)
  page_token?: string;
}

export function toAgentFilter(query: Omit<ListAgentsQuery, 'page_size' | 'page_token'>): AgentFilter {
  return {
    ...(query.attestation_type !== undefined && { attestationType: query.attestation_type }),
    ...(query.banned !== undefined && { banned: query.banned === 'true' }),
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
  @ApiProperty({ type: [AgentSelectorResponse] }) selectors!: AgentSelectorResponse[];
  @ApiProperty() banned!: boolean;
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
    selectors: agent.selectors.map(({ type, value }) => ({ type, value })),
    banned: agent.banned,
    created_at: agent.createdAt.toISOString(),
    updated_at: agent.updatedAt.toISOString(),
    last_seen_at: agent.lastSeenAt?.toISOString() ?? null,
  };
}
