import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AuditModule } from '../audit/audit.module.js';
import { EntriesModule } from '../entries/entries.module.js';
import { AgentPruner } from './agent-pruner.js';
import { AgentEntity } from './agent.entity.js';
import { AgentsController } from './agents.controller.js';
import { AgentsRepository } from './agents.repository.js';
import { AgentsService } from './agents.service.js';

@Module({
  imports: [TypeOrmModule.forFeature([AgentEntity]), EntriesModule, AuditModule],
  controllers: [AgentsController],
  providers: [AgentsRepository, AgentsService, AgentPruner],
  exports: [AgentsService],
})
export class AgentsModule {}
