import { type IncomingMessage } from 'node:http';

/** Who is calling the admin API. */
export type Actor = { kind: 'local-admin' } | { kind: 'admin-token'; name: string };

/** The form written to the audit log: `local-admin` or `admin-token:<name>`. */
export function describeActor(actor: Actor): string {
  return actor.kind === 'local-admin' ? 'local-admin' : `admin-token:${actor.name}`;
}

// Keyed by the raw Node request, which is the one object the guard, the interceptor and the filter all reach.
const actors = new WeakMap<IncomingMessage, Actor>();

export function setActor(request: IncomingMessage, actor: Actor): void {
  actors.set(request, actor);
}

export function actorOf(request: IncomingMessage): Actor | undefined {
  return actors.get(request);
}
