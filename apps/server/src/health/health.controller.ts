import { Controller, Get, Res } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import { type FastifyReply } from 'fastify';
import { Public } from '../auth/public.decorator.js';
import { HealthService, type Readiness } from './health.service.js';
import { MetricsService } from './metrics.service.js';

/** Probes and metrics; open to anyone, like SPIRE's health checks and Prometheus endpoint. */
@ApiTags('health')
@Public()
@Controller()
export class HealthController {
  constructor(
    private readonly health: HealthService,
    private readonly metrics: MetricsService,
  ) {}

  /** The process is up and serving HTTP. */
  @Get('healthz')
  live(): { status: 'ok' } {
    return { status: 'ok' };
  }

  /** 200 when the database answers and the authorities are active, else 503 naming what is missing. */
  @Get('readyz')
  async ready(): Promise<{ status: 'ready'; checks: Readiness }> {
    return { status: 'ready', checks: await this.health.readiness() };
  }

  @Get('metrics')
  async scrape(@Res({ passthrough: true }) reply: FastifyReply): Promise<string> {
    void reply.header('content-type', this.metrics.contentType);
    return this.metrics.render();
  }
}
