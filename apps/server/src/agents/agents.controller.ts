import { Body, Controller, Delete, Get, HttpCode, Param, Post, Query } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import {
  AgentCountResponse,
  AgentListResponse,
  AgentResponse,
  ListAgentsQuery,
  PurgeAgentsRequest,
  PurgeAgentsResponse,
  toAgentFilter,
  toAgentResponse,
} from './agent.dto.js';
import { AgentsService } from './agents.service.js';

/** `:id` is the agent's SPIFFE ID, URL-encoded (`spiffe%3A%2F%2Fexample.org%2Fsigil%2Fagent%2F…`). */
@ApiTags('agents')
@Controller('v1/agents')
export class AgentsController {
  constructor(private readonly agents: AgentsService) {}

  @Get()
  async list(@Query() query: ListAgentsQuery): Promise<AgentListResponse> {
    const page = await this.agents.list(toAgentFilter(query), {
      pageSize: query.page_size,
      pageToken: query.page_token,
    });
    return {
      agents: page.agents.map(toAgentResponse),
      ...(page.nextPageToken && { next_page_token: page.nextPageToken }),
    };
  }

  @Get('count')
  async count(@Query() query: ListAgentsQuery): Promise<AgentCountResponse> {
    return { count: await this.agents.count(toAgentFilter(query)) };
  }

  /** Removes agents that can re-attest, are not banned and whose SVID expired `expired_for` seconds ago or more. */
  @Post('purge')
  @HttpCode(200)
  async purge(@Body() body: PurgeAgentsRequest): Promise<PurgeAgentsResponse> {
    const dryRun = body.dry_run === true;
    const ids = await this.agents.pruneExpired(body.expired_for, dryRun);
    return { expired_agents: ids.map((id) => ({ agent_id: id, deleted: !dryRun })) };
  }

  @Get(':id')
  async get(@Param('id') id: string): Promise<AgentResponse> {
    return toAgentResponse(await this.agents.get(id));
  }

  @Delete(':id')
  @HttpCode(204)
  async evict(@Param('id') id: string): Promise<void> {
    await this.agents.evict(id);
  }

  @Post(':id/ban')
  @HttpCode(200)
  async ban(@Param('id') id: string): Promise<AgentResponse> {
    return toAgentResponse(await this.agents.ban(id));
  }
}
