import { Module } from '@nestjs/common';
import { AgentsModule } from '../agents/agents.module.js';
import { CaModule } from '../ca/ca.module.js';
import { EntriesModule } from '../entries/entries.module.js';
import { HealthController } from './health.controller.js';
import { DatabasePingRepository } from './database-ping.repository.js';
import { HealthService } from './health.service.js';

/** `/healthz`, `/readyz` and `/metrics`; the registry itself comes from the global MetricsModule. */
@Module({
  imports: [CaModule, AgentsModule, EntriesModule],
  controllers: [HealthController],
  providers: [DatabasePingRepository, HealthService],
})
export class HealthModule {}
