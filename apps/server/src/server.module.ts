import { type DynamicModule, Module, type Type } from '@nestjs/common';
import { AgentApiModule } from './agent-api/agent-api.module.js';
import { AgentsModule } from './agents/agents.module.js';
import { AuditModule } from './audit/audit.module.js';
import { AuthModule } from './auth/auth.module.js';
import { BundleModule } from './bundle/bundle.module.js';
import { CaModule } from './ca/ca.module.js';
import { type Clock, systemClock } from './common/clock.js';
import { CoreModule } from './common/core.module.js';
import { type ServerConfig } from './config.js';
import { DatabaseModule } from './database/database.module.js';
import { EntriesModule } from './entries/entries.module.js';
import { DownstreamModule } from './downstream/downstream.module.js';
import { FederationModule } from './federation/federation.module.js';
import { HealthModule } from './health/health.module.js';
import { MetricsModule } from './health/metrics.module.js';
import { JoinTokensModule } from './join-tokens/join-tokens.module.js';
import { LoggerModule } from './logger/logger.module.js';
import { OidcModule } from './oidc/oidc.module.js';
import { SvidsModule } from './svids/svids.module.js';
import { NodeAttestationModule } from './node-attestation/node-attestation.module.js';
import type { NodeAttestor } from './node-attestation/node-attestor.js';

/** The whole server: the validated config and clock, then every feature module. */
@Module({})
export class ServerModule {
  /** `nodeAttestors`: attestors besides the built-in ones (a test's own). */
  static forRoot(
    config: ServerConfig,
    clock: Clock = systemClock,
    nodeAttestors: readonly Type<NodeAttestor>[] = [],
  ): DynamicModule {
    return {
      module: ServerModule,
      imports: [
        CoreModule.forRoot(config, clock),
        DatabaseModule,
        MetricsModule,
        AuthModule,
        AuditModule,
        BundleModule,
        CaModule,
        EntriesModule,
        FederationModule,
        JoinTokensModule,
        AgentsModule,
        AgentApiModule,
        DownstreamModule,
        NodeAttestationModule.forRoot(nodeAttestors),
        HealthModule,
        LoggerModule,
        SvidsModule,
        OidcModule,
      ],
    };
  }
}
