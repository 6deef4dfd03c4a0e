import { SetMetadata } from '@nestjs/common';
import { RouteConfig } from '@nestjs/platform-fastify';

export const IS_PUBLIC_KEY = 'sigil:public';

/**
 * The per-source-address budget an open route draws on (see `public-rate-limits.ts`): `attestation` for node
 * attestation (a refused attempt costs more), `read` for the bundle, health and metrics.
 */
export type PublicBudget = 'attestation' | 'read';

/** The key of the Fastify route config under which an open route names its budget (read before the body is). */
export const PUBLIC_BUDGET_CONFIG = 'sigilPublicBudget';

/**
 * Marks a route (or a whole controller) as open to anyone (health, metrics, the federation bundle, node
 * attestation), and names the per-source-address budget its requests are counted against. The budget also goes in
 * the route's Fastify config, so that an address over its budget is refused before its request body is read;
 * Fastify takes that config per handler, so a class-level mark is copied onto each of the class's handlers.
 */
export const Public =
  (budget: PublicBudget = 'read'): MethodDecorator & ClassDecorator =>
  (target: object, key?: string | symbol, descriptor?: PropertyDescriptor) => {
    const config = RouteConfig({ [PUBLIC_BUDGET_CONFIG]: budget });
    if (key !== undefined && descriptor !== undefined) {
      SetMetadata(IS_PUBLIC_KEY, budget)(target, key, descriptor);
      config(target, key, descriptor);
      return;
    }
    SetMetadata(IS_PUBLIC_KEY, budget)(target as (...args: unknown[]) => unknown);
    const prototype = (target as { prototype: object }).prototype;
    for (const name of Object.getOwnPropertyNames(prototype)) {
      const method = Object.getOwnPropertyDescriptor(prototype, name);
      if (name !== 'constructor' && typeof method?.value === 'function') config(prototype, name, method);
    }
  };
