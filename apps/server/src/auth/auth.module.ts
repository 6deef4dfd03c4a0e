import { Module } from '@nestjs/common';
import { APP_GUARD, APP_INTERCEPTOR } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AgentApiModule } from '../agent-api/agent-api.module.js';
import { BundleModule } from '../bundle/bundle.module.js';
import { AdminAuthGuard } from './admin-auth.guard.js';
import { AdminSocketConnections } from './admin-socket-connections.js';
import { AdminTokenEntity } from './admin-token.entity.js';
import { AdminTokensController } from './admin-tokens.controller.js';
import { AdminTokensRepository } from './admin-tokens.repository.js';
import { AdminTokensService } from './admin-tokens.service.js';
import { PublicRateLimitInterceptor } from './public-rate-limit.interceptor.js';
import { IgnoredRetryAfter } from './ignored-retry-after.js';
import { PublicRateLimits } from './public-rate-limits.js';

/**
 * Admin authentication: the global guard, the admin socket's connections, bearer admin tokens and admin SVIDs (the
 * agent API module's entry index says which SPIFFE IDs are admins); and the
 * per-source-address limits of the routes open without it.
 */
@Module({
  imports: [TypeOrmModule.forFeature([AdminTokenEntity]), AgentApiModule, BundleModule],
  controllers: [AdminTokensController],
  providers: [
    AdminTokensRepository,
    AdminTokensService,
    AdminSocketConnections,
    PublicRateLimits,
    IgnoredRetryAfter,
    { provide: APP_GUARD, useClass: AdminAuthGuard },
    { provide: APP_INTERCEPTOR, useClass: PublicRateLimitInterceptor },
  ],
  exports: [AdminSocketConnections],
})
export class AuthModule {}
