import { type Clock } from '@sigil/runtime';
import { type AgentConfig } from '../../config.js';
import { type SvidCache } from '../../manager/svid-cache.js';
import { createUnixAttestor } from './unix/unix-attestor.js';
import { CompositeWorkloadAttestor, type WorkloadAttestor } from './workload-attestor.js';

/** What a workload attestor may be built from. */
export interface WorkloadAttestorContext {
  /** The agent's whole configuration: an attestor reads its own settings from it. */
  readonly config: AgentConfig;
  readonly clock: Clock;
  /** What the entries the agent holds need (so that an attestor can skip work no entry could use). */
  readonly cache: Pick<SvidCache, 'usesUnixSha256'>;
}

export type WorkloadAttestorFactory = (context: WorkloadAttestorContext) => WorkloadAttestor;

/**
 * Every workload attestor the agent can run, by type (SPIRE's plug-in names): `--workload-attestor` picks among
 * these. A new attestor is a folder next to `unix/` and one line here.
 */
export const WORKLOAD_ATTESTORS: Readonly<Record<string, WorkloadAttestorFactory>> = Object.freeze({
  unix: createUnixAttestor,
});

/**
 * The composite of the attestors `context.config.workloadAttestors` names, in that order, with the configured
 * per-call deadline. `registry` is for tests that register an attestor of their own.
 */
export function createWorkloadAttestors(
  context: WorkloadAttestorContext,
  registry: Readonly<Record<string, WorkloadAttestorFactory>> = WORKLOAD_ATTESTORS,
): CompositeWorkloadAttestor {
  const attestors = context.config.workloadAttestors.map((type) => {
    const create = Object.hasOwn(registry, type) ? registry[type] : undefined;
    if (create === undefined) {
      throw new Error(`workload attestor ${JSON.stringify(type)} is not registered (known: ${knownTypes(registry)})`);
    }
    const attestor = create(context);
    if (attestor.type !== type) {
      throw new Error(
        `workload attestor registered as ${JSON.stringify(type)} has type ${JSON.stringify(attestor.type)}`,
      );
    }
    return attestor;
  });
  return new CompositeWorkloadAttestor(attestors, { timeoutMs: context.config.workloadAttestationTimeoutMs });
}

/** The registered types, for messages: `unix, k8s`. */
export function knownTypes(registry: Readonly<Record<string, unknown>> = WORKLOAD_ATTESTORS): string {
  return Object.keys(registry).join(', ');
}
