import { AGENT_API_ROUTES } from '@sigil/agent-api';
import { type FastifyReply, type FastifyRequest } from 'fastify';
import { toErrorReply } from '../common/error.filter.js';
import { previouslyVerifiedAgentId } from './agent-auth.guard.js';
import { type AgentSigningBudget, type SigningKind } from './signing-budget.js';

const SIGNING_ROUTES: Readonly<Record<string, SigningKind>> = {
  [AGENT_API_ROUTES.signX509Svids.path]: 'x509',
  [AGENT_API_ROUTES.signJwtSvid.path]: 'jwt',
};

/**
 * A Fastify `onRequest` hook: a signing request that cannot pass (the agent's budget for it is empty, or its X.509
 * batches in progress are at the cap) is answered 429 before its body is read. A 500-CSR body costs the server
 * milliseconds to parse, and an agent looping on refusals would otherwise keep it busy with bodies it then refuses.
 * Only on connections whose client certificate an earlier request verified; everything else goes through the guard
 * and the full checks as usual.
 */
export function refuseSpentSigningEarly(
  budget: AgentSigningBudget,
  bodyLimit: number,
): (request: FastifyRequest, reply: FastifyReply, done: () => void) => void {
  return (request, reply, done) => {
    const kind = request.method === 'POST' ? SIGNING_ROUTES[request.url] : undefined;
    const agentId = kind === undefined ? undefined : previouslyVerifiedAgentId(request.raw.socket);
    if (kind === undefined || agentId === undefined) {
      done();
      return;
    }
    try {
      budget.refuseEarly(agentId, kind);
    } catch (error) {
      const { status, body, retryAfterSeconds } = toErrorReply(error, request, bodyLimit);
      if (retryAfterSeconds !== undefined) void reply.header('retry-after', String(retryAfterSeconds));
      // Answered here: Fastify skips the body and the route (done is not called).
      void reply.code(status).send(body);
      return;
    }
    done();
  };
}
