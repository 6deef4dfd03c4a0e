import { Global, Module } from '@nestjs/common';
import { AUTHORITY_METRICS } from '../ca/authority-metrics.js';
import { FEDERATION_METRICS } from '../federation/federation-metrics.js';
import { MetricsService } from './metrics.service.js';

/** Global, so the CA and the federation bundle fetcher report to the same registry `/metrics` serves without importing the health module. */
@Global()
@Module({
  providers: [
    MetricsService,
    { provide: AUTHORITY_METRICS, useExisting: MetricsService },
    { provide: FEDERATION_METRICS, useExisting: MetricsService },
  ],
  exports: [MetricsService, AUTHORITY_METRICS, FEDERATION_METRICS],
})
export class MetricsModule {}
