import { Module } from '@nestjs/common';
import { AgentApiModule } from '../agent-api/agent-api.module.js';
import { AuditModule } from '../audit/audit.module.js';
import { BundleModule } from '../bundle/bundle.module.js';
import { CaModule } from '../ca/ca.module.js';
import { DownstreamAuthGuard } from './downstream-auth.guard.js';
import { DownstreamController } from './downstream.controller.js';
import { DownstreamService } from './downstream.service.js';

/**
 * Downstream entries (SPIRE's downstream API): `POST /downstream/v1/x509-ca` on the TLS port signs the CA of a
 * nested server that presents the X509-SVID of an entry with `downstream: true`, `POST /downstream/v1/jwt-authority`
 * publishes its new JWT keys in our bundle, `GET /downstream/v1/authorities` tells it our authorities.
 */
@Module({
  imports: [AgentApiModule, AuditModule, BundleModule, CaModule],
  controllers: [DownstreamController],
  providers: [DownstreamAuthGuard, DownstreamService],
})
export class DownstreamModule {}
