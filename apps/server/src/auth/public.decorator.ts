import { SetMetadata } from '@nestjs/common';
import { RouteConfig } from '@nestjs/platform-fastify';
import type { FastifyRequest } from 'fastify';

export const IS_PUBLIC_KEY = 'sigil:public';

/**
 * The per-source-address budget an open route draws on (see `public-rate-limits.ts`): `attestation` for node
 * attestation (a refused attempt costs more), `read` for the bundle, health and metrics.
 */
export type PublicBudget = 'attestation' | 'read';

/**
 * What an open route's requests count against: a {@link PublicBudget}, or `none` for the agent API's mTLS routes,
 * which the admin guard must let through but which are authenticated by the agent's SVID and limited per agent
 * (sync rate, signing budgets), never per address (a fleet behind one NAT or load balancer shares one address).
 */
export type OpenRouteBudget = PublicBudget | 'none';

/** The key of the Fastify route config under which an open route names its budget (read before the body is). */
export const PUBLIC_BUDGET_CONFIG = 'sigilPublicBudget';

/** The key of the Fastify route config under which an open route names what one request takes from its budget. */
export const PUBLIC_COST_CONFIG = 'sigilPublicCost';

/**
 * What one request takes from its budget: a number, or a function of the routed request (its params are known,
 * its body not yet), for a route whose cost depends on a path parameter.
 */
export type PublicCost = number | ((request: FastifyRequest) => number);

/**
 * Marks a route (or a whole controller) as open to anyone (health, metrics, the federation bundle, node
 * attestation), and names the per-source-address budget its requests are counted against. The budget also goes in
 * the route's Fastify config, so that an address over its budget is refused before its request body is read;
 * Fastify takes that config per handler, so a class-level mark is copied onto each of the class's handlers.
 */
export const Public =
  (budget: OpenRouteBudget = 'read', cost: PublicCost = 1): MethodDecorator & ClassDecorator =>
  (target: object, key?: string | symbol, descriptor?: PropertyDescriptor) => {
    const config = RouteConfig({ [PUBLIC_BUDGET_CONFIG]: budget, [PUBLIC_COST_CONFIG]: cost });
    if (key !== undefined && descriptor !== undefined) {
      SetMetadata(IS_PUBLIC_KEY, budget)(target, key, descriptor);
      config(target, key, descriptor);
      return;
    }
    SetMetadata(IS_PUBLIC_KEY, budget)(target as (...args: unknown[]) => unknown);
    const prototype = (target as { prototype: object }).prototype;
    for (const name of Object.getOwnPropertyNames(prototype)) {
      const method = Object.getOwnPropertyDescriptor(prototype, name);
      // A handler with a mark of its own (method decorators run first) keeps it.
      if (name === 'constructor' || typeof method?.value !== 'function') continue;
      if (Reflect.hasMetadata(IS_PUBLIC_KEY, method.value as object)) continue;
      config(prototype, name, method);
    }
  };
