import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import { type FastifyRequest } from 'fastify';
import { AppError } from '../common/errors.js';
import { type Actor, actorOf } from './actor.js';

/** The authenticated caller of an admin route, as the auth guard recorded it. */
export const CurrentActor = createParamDecorator((_data: unknown, context: ExecutionContext): Actor => {
  const actor = actorOf(context.switchToHttp().getRequest<FastifyRequest>().raw);
  if (!actor) throw new AppError('unauthenticated', 'no authenticated caller on this request');
  return actor;
});
