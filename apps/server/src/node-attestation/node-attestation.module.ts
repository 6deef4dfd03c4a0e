import { type DynamicModule, Module, type Type } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AgentApiModule } from '../agent-api/agent-api.module.js';
import { EntriesModule } from '../entries/entries.module.js';
import { JoinTokensModule } from '../join-tokens/join-tokens.module.js';
import { NodeAttestationController } from './node-attestation.controller.js';
import { NodeAttestationService } from './node-attestation.service.js';
import type { NodeAttestor } from './node-attestor.js';
import { X509popChallengeEntity } from './x509pop/x509pop-challenge.entity.js';
import { X509POP_SHARED_CHALLENGES, X509popChallengesRepository } from './x509pop/x509pop-challenges.repository.js';
import { Database } from '../database/database.js';
import { NODE_ATTESTOR_INSTANCES, NODE_ATTESTORS, NodeAttestorRegistry } from './node-attestors.js';

/**
 * Node attestation under `/agent/v1/attest`: the attestors of {@link NODE_ATTESTORS} (and, in tests, any others
 * given), the registry of those enabled by `--node-attestor`, and the routes. Needs `SERVER_CONFIG` and `CLOCK`
 * from a global module.
 */
@Module({})
export class NodeAttestationModule {
  static forRoot(extraAttestors: readonly Type<NodeAttestor>[] = []): DynamicModule {
    const attestors = [...NODE_ATTESTORS, ...extraAttestors];
    return {
      module: NodeAttestationModule,
      imports: [AgentApiModule, EntriesModule, JoinTokensModule, TypeOrmModule.forFeature([X509popChallengeEntity])],
      controllers: [NodeAttestationController],
      providers: [
        X509popChallengesRepository,
        {
          provide: X509POP_SHARED_CHALLENGES,
          inject: [Database, X509popChallengesRepository],
          useFactory: (database: Pick<Database, 'kind'>, repository: X509popChallengesRepository) =>
            database.kind === 'postgres' ? repository : null,
        },
        ...attestors,
        {
          provide: NODE_ATTESTOR_INSTANCES,
          useFactory: (...instances: NodeAttestor[]) => instances,
          inject: attestors,
        },
        NodeAttestorRegistry,
        NodeAttestationService,
      ],
    };
  }
}
