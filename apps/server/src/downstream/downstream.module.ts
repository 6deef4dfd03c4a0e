import { Module } from '@nestjs/common';
import { AuditModule } from '../audit/audit.module.js';
import { BundleModule } from '../bundle/bundle.module.js';
import { CaModule } from '../ca/ca.module.js';
import { EntriesModule } from '../entries/entries.module.js';
import { DownstreamAuthGuard } from './downstream-auth.guard.js';
import { DownstreamController } from './downstream.controller.js';
import { DownstreamEntries } from './downstream-entries.js';
import { DownstreamService } from './downstream.service.js';

/**
 * Downstream entries (SPIRE's downstream API): `POST /downstream/v1/x509-ca` on the TLS port signs the CA of a
 * nested server that presents the X509-SVID of an entry with `downstream: true`.
 */
@Module({
  imports: [AuditModule, BundleModule, CaModule, EntriesModule],
  controllers: [DownstreamController],
  providers: [DownstreamAuthGuard, DownstreamEntries, DownstreamService],
})
export class DownstreamModule {}
