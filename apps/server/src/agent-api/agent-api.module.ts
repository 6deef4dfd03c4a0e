import { Module } from '@nestjs/common';
import { AgentsModule } from '../agents/agents.module.js';
import { BundleModule } from '../bundle/bundle.module.js';
import { CaModule } from '../ca/ca.module.js';
import { EntriesModule } from '../entries/entries.module.js';
import { AgentController } from './agent.controller.js';
import { AgentAuthGuard } from './agent-auth.guard.js';
import { AgentSvidAuthenticator } from './agent-svid-authenticator.js';
import { AgentSvidService } from './agent-svid.service.js';
import { AuthorisedEntriesService } from './authorised-entries.service.js';
import { AgentSyncRateLimiter } from './rate-limiter.js';
import { AgentSigningBudget } from './signing-budget.js';
import { SvidSigningService } from './svid-signing.service.js';
import { SyncService } from './sync.service.js';

/**
 * The agent API under `/agent/v1` on the TLS port, authenticated by the agent's X509-SVID: renewal, sync of
 * authorised entries (long-poll) and SVID signing; it exports the agent SVID service, which node attestation
 * (node-attestation/) completes with, the agent SVID check, which the attestation budget asks whose attestation pays
 * (auth/public-rate-limits.ts), and the entry index, whose admin entries the admin guard reads. Needs `SERVER_CONFIG`
 * and `CLOCK` from a global module.
 */
@Module({
  imports: [AgentsModule, BundleModule, CaModule, EntriesModule],
  controllers: [AgentController],
  providers: [
    AgentAuthGuard,
    AgentSvidAuthenticator,
    AgentSigningBudget,
    AgentSyncRateLimiter,
    AgentSvidService,
    AuthorisedEntriesService,
    SvidSigningService,
    SyncService,
  ],
  exports: [AgentSvidAuthenticator, AgentSvidService, AuthorisedEntriesService],
})
export class AgentApiModule {}
