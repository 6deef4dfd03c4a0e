import { ApiProperty, ApiPropertyOptional, OmitType, PartialType } from '@nestjs/swagger';
import { serializeSyncEntry } from '@sigil/agent-api';
import { Transform, Type } from 'class-transformer';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsBoolean,
  IsIn,
  IsInt,
  IsISO8601,
  IsObject,
  IsOptional,
  IsString,
  Max,
  Min,
  ValidateNested,
} from 'class-validator';
import { type AppErrorKind } from '../common/errors.js';
import { ENTRY_LIMITS, parseSelectorQuery } from './entry-rules.js';
import {
  MAX_BATCH_SIZE,
  SELECTOR_MATCHES,
  type Entry,
  type EntryCreateResult,
  type EntryFilter,
  type EntryInput,
  type Selector,
  type SelectorMatch,
} from './entry.js';
import { MAX_PAGE_SIZE } from './entries.service.js';

// The DTOs check shape (types, list sizes); EntriesService checks meaning (SPIFFE IDs, selector syntax, bounds).
// Lists of objects say @IsObject({ each: true }): ValidateNested alone walks an element that is itself a list as
// more elements, so `entries: [[...]]` would pass.

export class SelectorDto {
  @ApiProperty({ example: 'unix', description: 'selector type: letters, digits, _ - .' })
  @IsString()
  type!: string;

  @ApiProperty({ example: 'uid:1000' })
  @IsString()
  value!: string;
}

export class CreateEntryDto {
  @ApiPropertyOptional({ format: 'uuid', description: 'the entry ID to use (a lowercase UUID); generated when absent' })
  @IsOptional()
  @IsString()
  id?: string;

  @ApiProperty({ example: 'spiffe://example.org/web', description: 'in the server trust domain, with a path' })
  @IsString()
  spiffe_id!: string;

  @ApiProperty({ example: 'spiffe://example.org/sigil/agent/join_token/3f1c', description: 'usually an agent id' })
  @IsString()
  parent_id!: string;

  @ApiProperty({ type: [SelectorDto], description: `1 to ${ENTRY_LIMITS.maxSelectors} selectors` })
  @IsArray()
  @ArrayMaxSize(ENTRY_LIMITS.maxSelectors)
  @IsObject({ each: true })
  @ValidateNested({ each: true })
  @Type(() => SelectorDto)
  selectors!: SelectorDto[];

  @ApiPropertyOptional({
    description: `seconds; 0 (default) = server default, else ${ENTRY_LIMITS.x509SvidTtl.min}-${ENTRY_LIMITS.x509SvidTtl.max}`,
  })
  @IsOptional()
  @IsInt()
  x509_svid_ttl?: number;

  @ApiPropertyOptional({
    description: `seconds; 0 (default) = server default, else ${ENTRY_LIMITS.jwtSvidTtl.min}-${ENTRY_LIMITS.jwtSvidTtl.max}`,
  })
  @IsOptional()
  @IsInt()
  jwt_svid_ttl?: number;

  @ApiPropertyOptional({ type: [String], example: ['web.example.org'] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(ENTRY_LIMITS.maxDnsNames)
  @IsString({ each: true })
  dns_names?: string[];

  @ApiPropertyOptional({ type: [String], example: ['partner.example.com'], description: 'foreign trust domains' })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(ENTRY_LIMITS.maxFederatesWith)
  @IsString({ each: true })
  federates_with?: string[];

  @ApiPropertyOptional()
  @IsOptional()
  @IsBoolean()
  admin?: boolean;

  @ApiPropertyOptional()
  @IsOptional()
  @IsBoolean()
  downstream?: boolean;

  @ApiPropertyOptional({ description: `at most ${ENTRY_LIMITS.maxHintBytes} bytes` })
  @IsOptional()
  @IsString()
  hint?: string;

  @ApiPropertyOptional({ type: String, format: 'date-time', nullable: true, description: 'RFC 3339, in the future' })
  @IsOptional()
  @IsISO8601({ strict: true, strictSeparator: true })
  expires_at?: string | null;
}

export class BatchCreateEntriesDto {
  @ApiProperty({ type: [CreateEntryDto] })
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(MAX_BATCH_SIZE)
  @IsObject({ each: true })
  @ValidateNested({ each: true })
  @Type(() => CreateEntryDto)
  entries!: CreateEntryDto[];
}

/**
 * The create body with every field optional (same shape rules and docs, written once): absent fields keep their
 * value, `expires_at: null` removes the expiry. A given `expires_at` must be in the future, as on create; the service
 * checks the merged entry as a whole.
 */
export class UpdateEntryDto extends PartialType(OmitType(CreateEntryDto, ['id'] as const)) {}

/** Filters of `GET /v1/entries` and `GET /v1/entries/count`. */
export class EntryFilterQueryDto {
  @ApiPropertyOptional()
  @IsOptional()
  @IsString()
  spiffe_id?: string;

  @ApiPropertyOptional()
  @IsOptional()
  @IsString()
  parent_id?: string;

  @ApiPropertyOptional({ type: [String], description: '`type:value`, repeatable', example: ['unix:uid:1000'] })
  @IsOptional()
  @Transform(({ value }: { value: unknown }) => (Array.isArray(value) ? value : [value]))
  @IsArray()
  @ArrayMaxSize(ENTRY_LIMITS.maxSelectors)
  @IsString({ each: true })
  selector?: string[];

  @ApiPropertyOptional({ enum: SELECTOR_MATCHES, description: 'how `selector` matches (default superset)' })
  @IsOptional()
  @IsIn(SELECTOR_MATCHES)
  selector_match?: SelectorMatch;

  @ApiPropertyOptional({ type: [String], description: 'trust domain names, repeatable', example: ['partner.org'] })
  @IsOptional()
  @Transform(({ value }: { value: unknown }) => (Array.isArray(value) ? value : [value]))
  @IsArray()
  @ArrayMaxSize(ENTRY_LIMITS.maxFederatesWith)
  @IsString({ each: true })
  federates_with?: string[];

  @ApiPropertyOptional({ enum: SELECTOR_MATCHES, description: 'how `federates_with` matches (default superset)' })
  @IsOptional()
  @IsIn(SELECTOR_MATCHES)
  federates_with_match?: SelectorMatch;

  @ApiPropertyOptional({ enum: ['true', 'false'], description: 'only downstream entries, or only the others' })
  @IsOptional()
  @IsIn(['true', 'false'])
  downstream?: 'true' | 'false';

  @ApiPropertyOptional()
  @IsOptional()
  @IsString()
  hint?: string;
}

export class ListEntriesQueryDto extends EntryFilterQueryDto {
  @ApiPropertyOptional({ minimum: 1, maximum: MAX_PAGE_SIZE, default: 100 })
  @IsOptional()
  @Type(() => Number)
  @IsInt()
  @Min(1)
  @Max(MAX_PAGE_SIZE)
  page_size?: number;

  @ApiPropertyOptional({ description: '`next_page_token` of the previous page' })
  @IsOptional()
  @IsString()
  page_token?: string;
}

export class EntryResponseDto {
  @ApiProperty({ format: 'uuid' }) id!: string;
  @ApiProperty() spiffe_id!: string;
  @ApiProperty() parent_id!: string;
  @ApiProperty({ type: [SelectorDto] }) selectors!: SelectorDto[];
  @ApiProperty() x509_svid_ttl!: number;
  @ApiProperty() jwt_svid_ttl!: number;
  @ApiProperty({ type: [String] }) dns_names!: string[];
  @ApiProperty({ type: [String] }) federates_with!: string[];
  @ApiProperty() admin!: boolean;
  @ApiProperty() downstream!: boolean;
  @ApiProperty() hint!: string;
  @ApiProperty({ type: String, format: 'date-time', nullable: true }) expires_at!: string | null;
  @ApiProperty() revision_number!: number;
  @ApiProperty({ format: 'date-time' }) created_at!: string;
  @ApiProperty({ format: 'date-time' }) updated_at!: string;
}

export class EntryPageResponseDto {
  @ApiProperty({ type: [EntryResponseDto] }) entries!: EntryResponseDto[];
  @ApiProperty({ type: String, nullable: true }) next_page_token!: string | null;
}

export class EntryCountResponseDto {
  @ApiProperty() count!: number;
}

export class BatchStatusDto {
  @ApiProperty({ description: "'ok', or the error kind (invalid_argument, already_exists)" })
  code!: 'ok' | AppErrorKind;
  @ApiProperty() message!: string;
}

export class BatchCreateResultDto {
  @ApiProperty({ type: BatchStatusDto }) status!: BatchStatusDto;
  @ApiPropertyOptional({ type: EntryResponseDto, description: 'the created entry, or the one already there' })
  entry?: EntryResponseDto;
}

export class BatchCreateEntriesResponseDto {
  @ApiProperty({ type: [BatchCreateResultDto] }) results!: BatchCreateResultDto[];
}

/** The admin API's entry: the sync's entry (the agent API contract) and when it last changed. */
export function toEntryResponse(entry: Entry): EntryResponseDto {
  return { ...serializeSyncEntry(entry), updated_at: entry.updatedAt.toISOString() };
}

/** Maps a create or update body to the service's input; only the fields present in the body are set. */
export function toEntryInput(dto: CreateEntryDto): EntryInput;
export function toEntryInput(dto: UpdateEntryDto): Partial<EntryInput>;
export function toEntryInput(dto: CreateEntryDto | UpdateEntryDto): Partial<EntryInput> {
  // Assigned one by one, in a fixed order, so every input has the same shape (an object rebuilt from a filtered
  // entry list is a slow dictionary for every later read).
  const input: Partial<EntryInput> = {};
  if ('id' in dto && dto.id !== undefined) input.id = dto.id;
  if (dto.spiffe_id !== undefined) input.spiffeId = dto.spiffe_id;
  if (dto.parent_id !== undefined) input.parentId = dto.parent_id;
  // An update's optional selectors pass validation as null: left as they are, like absent ones.
  if (dto.selectors !== undefined && dto.selectors !== null) {
    input.selectors = dto.selectors.map(({ type, value }) => ({ type, value }));
  }
  if (dto.x509_svid_ttl !== undefined) input.x509SvidTtl = dto.x509_svid_ttl;
  if (dto.jwt_svid_ttl !== undefined) input.jwtSvidTtl = dto.jwt_svid_ttl;
  if (dto.dns_names !== undefined) input.dnsNames = dto.dns_names;
  if (dto.federates_with !== undefined) input.federatesWith = dto.federates_with;
  if (dto.admin !== undefined) input.admin = dto.admin;
  if (dto.downstream !== undefined) input.downstream = dto.downstream;
  if (dto.hint !== undefined) input.hint = dto.hint;
  if (dto.expires_at !== undefined) input.expiresAt = dto.expires_at === null ? null : new Date(dto.expires_at);
  return input;
}

/** Splits `type:value` filter selectors at the first colon (values may hold colons, as in `unix:uid:0`). */
export function toEntryFilter(query: EntryFilterQueryDto): EntryFilter {
  return {
    spiffeId: query.spiffe_id,
    parentId: query.parent_id,
    selectors: query.selector?.map(parseSelectorFilter),
    selectorMatch: query.selector_match,
    federatesWith: query.federates_with,
    federatesWithMatch: query.federates_with_match,
    downstream: query.downstream === undefined ? undefined : query.downstream === 'true',
    hint: query.hint,
  };
}

function parseSelectorFilter(text: string, index: number): Selector {
  return parseSelectorQuery(text, `selector.${index}`);
}

export function toBatchCreateResponse(results: readonly EntryCreateResult[]): BatchCreateEntriesResponseDto {
  return {
    results: results.map((result) =>
      result.ok
        ? { status: { code: 'ok', message: 'ok' }, entry: toEntryResponse(result.entry) }
        : {
            status: { code: result.error.kind, message: result.error.message },
            ...(result.existing ? { entry: toEntryResponse(result.existing) } : {}),
          },
    ),
  };
}
