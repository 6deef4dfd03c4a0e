import { SetMetadata } from '@nestjs/common';

export const IS_PUBLIC_KEY = 'sigil:public';

/**
 * The per-source-address budget an open route draws on (see `PublicRateLimitInterceptor`): `attestation` for node
 * attestation (a refused attempt costs more), `read` for the bundle, health and metrics.
 */
export type PublicBudget = 'attestation' | 'read';

/**
 * Marks a route (or a whole controller) as open to anyone (health, metrics, the federation bundle, node
 * attestation), and names the per-source-address budget its requests are counted against.
 */
export const Public = (budget: PublicBudget = 'read'): MethodDecorator & ClassDecorator =>
  SetMetadata(IS_PUBLIC_KEY, budget);
