import { Global, Module } from '@nestjs/common';
import { AUTHORITY_METRICS } from '../ca/authority-metrics.js';
import { MetricsService } from './metrics.service.js';

/** Global, so the CA reports to the same registry `/metrics` serves without importing the health module. */
@Global()
@Module({
  providers: [MetricsService, { provide: AUTHORITY_METRICS, useExisting: MetricsService }],
  exports: [MetricsService, AUTHORITY_METRICS],
})
export class MetricsModule {}
