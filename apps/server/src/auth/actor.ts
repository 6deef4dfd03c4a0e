import { type IncomingMessage } from 'node:http';

/** Who is calling the admin API. */
export type Actor =
  { kind: 'local-admin' } | { kind: 'admin-token'; name: string } | { kind: 'admin-svid'; spiffeId: string };

/**
 * The form written to the audit log: `local-admin`, `admin-token:<name>`, or the SPIFFE ID of an admin workload's
 * X509-SVID (`spiffe://…`, as SPIRE logs its caller).
 */
export function describeActor(actor: Actor): string {
  switch (actor.kind) {
    case 'local-admin':
      return 'local-admin';
    case 'admin-token':
      return `admin-token:${actor.name}`;
    case 'admin-svid':
      return actor.spiffeId;
  }
}

// Keyed by the raw Node request, which is the one object the guard, the interceptor and the filter all reach.
const actors = new WeakMap<IncomingMessage, Actor>();

export function setActor(request: IncomingMessage, actor: Actor): void {
  actors.set(request, actor);
}

export function actorOf(request: IncomingMessage): Actor | undefined {
  return actors.get(request);
}
