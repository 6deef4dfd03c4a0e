import { type IncomingMessage } from 'node:http';
import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import { type FastifyReply, type FastifyRequest } from 'fastify';
import type { AgentIdentity } from './entry-graph.js';

/** The agent calling an mTLS route, as {@link AgentAuthGuard} authenticated it. */
export interface CallingAgent extends AgentIdentity {
  /** Serial number (lowercase hex) of the agent SVID it presented: its current one. */
  readonly serialNumber: string;
  /** Its node attestor's type, as recorded (`join_token`, `x509pop`, …). */
  readonly attestationType: string;
  /** Whether its node attestor lets it attest again (then it renews by attesting again, as in SPIRE). */
  readonly canReattest: boolean;
}

// Keyed by the raw Node request, which the guard and the route handler both reach.
const callers = new WeakMap<IncomingMessage, CallingAgent>();

export function setCallingAgent(request: IncomingMessage, agent: CallingAgent): void {
  callers.set(request, agent);
}

/** Route parameter: the authenticated agent (only on routes behind the agent guard). */
export const CurrentAgent = createParamDecorator((_data: unknown, context: ExecutionContext): CallingAgent => {
  const agent = callers.get(context.switchToHttp().getRequest<FastifyRequest>().raw);
  if (!agent) throw new Error('agent route reached without the agent guard');
  return agent;
});

/** Aborts when the connection closes before the answer was sent (a long-poll whose agent went away). */
export function abortedOnDisconnect(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller.signal;
}
