import { Body, Controller, Delete, Get, HttpCode, Param, Patch, Post, Query } from '@nestjs/common';
import { ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { EntriesService } from './entries.service.js';
import {
  BatchCreateEntriesDto,
  BatchCreateEntriesResponseDto,
  EntryCountResponseDto,
  EntryFilterQueryDto,
  EntryPageResponseDto,
  EntryResponseDto,
  ListEntriesQueryDto,
  UpdateEntryDto,
  toBatchCreateResponse,
  toEntryFilter,
  toEntryInput,
  toEntryResponse,
} from './entry.dto.js';

/** Registration entries: `/v1/entries` (SPIRE's entry API, with snake_case JSON). */
@ApiTags('entries')
@Controller('v1/entries')
export class EntriesController {
  constructor(private readonly entries: EntriesService) {}

  /** Batch create: 200 with one result per entry, each `ok` or the reason it failed. */
  @Post()
  @HttpCode(200)
  @ApiOkResponse({ type: BatchCreateEntriesResponseDto })
  async create(@Body() body: BatchCreateEntriesDto): Promise<BatchCreateEntriesResponseDto> {
    return toBatchCreateResponse(await this.entries.createEntries(body.entries.map((entry) => toEntryInput(entry))));
  }

  @Get()
  @ApiOkResponse({ type: EntryPageResponseDto })
  async list(@Query() query: ListEntriesQueryDto): Promise<EntryPageResponseDto> {
    const page = await this.entries.listEntries(toEntryFilter(query), {
      pageSize: query.page_size,
      pageToken: query.page_token,
    });
    return { entries: page.entries.map(toEntryResponse), next_page_token: page.nextPageToken };
  }

  @Get('count')
  @ApiOkResponse({ type: EntryCountResponseDto })
  async count(@Query() query: EntryFilterQueryDto): Promise<EntryCountResponseDto> {
    return { count: await this.entries.countEntries(toEntryFilter(query)) };
  }

  @Get(':id')
  @ApiOkResponse({ type: EntryResponseDto })
  async get(@Param('id') id: string): Promise<EntryResponseDto> {
    return toEntryResponse(await this.entries.getEntry(id));
  }

  @Patch(':id')
  @ApiOkResponse({ type: EntryResponseDto })
  async update(@Param('id') id: string, @Body() body: UpdateEntryDto): Promise<EntryResponseDto> {
    return toEntryResponse(await this.entries.updateEntry(id, toEntryInput(body)));
  }

  @Delete(':id')
  @HttpCode(204)
  async delete(@Param('id') id: string): Promise<void> {
    await this.entries.deleteEntry(id);
  }
}
