import { Controller, Get, Query, Res } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { SpiffeJwks } from '@sigil/spiffe';
import type { FastifyReply } from 'fastify';
import { BundleQuery } from './bundle.dto.js';
import { BundleService } from './bundle.service.js';

/** Our trust bundle for operators (`sigil-server bundle show`). */
@ApiTags('bundle')
@Controller('v1/bundle')
export class BundleController {
  constructor(private readonly bundles: BundleService) {}

  @Get()
  show(@Query() query: BundleQuery, @Res({ passthrough: true }) reply: FastifyReply): SpiffeJwks | string {
    if (query.format !== 'pem') return this.bundles.ownJwks();
    void reply.header('content-type', 'application/x-pem-file');
    return this.bundles.ownPem();
  }
}
