import { type Clock } from '@sigil/runtime';
import { type AgentConfig } from '../../config.js';
import { type SvidCache } from '../../manager/svid-cache.js';
import { DOCKER_ATTESTOR } from './docker/docker-attestor.js';
import { K8S_ATTESTOR } from './k8s/k8s-attestor.js';
import { UNIX_ATTESTOR } from './unix/unix-attestor.js';
import { CompositeWorkloadAttestor, type WorkloadAttestor } from './workload-attestor.js';

/** What a workload attestor may be built from. */
export interface WorkloadAttestorContext {
  /** The agent's whole configuration. */
  readonly config: AgentConfig;
  readonly clock: Clock;
  /** What the entries the agent holds need (so that an attestor can skip work no entry could use). */
  readonly cache: Pick<SvidCache, 'usesUnixSha256'>;
  /**
   * This attestor's options (`--workload-attestor docker:docker_socket_path=…`): only names among its
   * {@link WorkloadAttestorPlugin.optionNames}, with values its `checkOptions` accepted when the config loaded.
   */
  readonly options: Readonly<Record<string, string>>;
}

export type WorkloadAttestorFactory = (context: WorkloadAttestorContext) => WorkloadAttestor;

/** One registered workload attestor: the options it takes and how it is built. */
export interface WorkloadAttestorPlugin {
  /** The options `--workload-attestor <type>:<option>=<value>,…` may set; any other is a config error. */
  readonly optionNames: readonly string[];
  /**
   * The problems with the option values (each `<option>: <what is wrong>`), checked when the config loads so that a
   * bad value stops the agent with a config error before it starts; none when it has no such check.
   */
  readonly checkOptions?: (options: Readonly<Record<string, string>>) => readonly string[];
  readonly create: WorkloadAttestorFactory;
}

/**
 * Every workload attestor the agent can run, by type (SPIRE's plug-in names): `--workload-attestor` picks among
 * these. A new attestor is a folder next to `unix/` and one line here.
 */
export const WORKLOAD_ATTESTORS: Readonly<Record<string, WorkloadAttestorPlugin>> = Object.freeze({
  unix: UNIX_ATTESTOR,
  k8s: K8S_ATTESTOR,
  docker: DOCKER_ATTESTOR,
});

/**
 * The composite of the attestors `context.config.workloadAttestors` names, in that order, each built with its
 * options, with the configured per-call deadline. `registry` is for tests that register an attestor of their own.
 */
export function createWorkloadAttestors(
  context: Omit<WorkloadAttestorContext, 'options'>,
  registry: Readonly<Record<string, WorkloadAttestorPlugin>> = WORKLOAD_ATTESTORS,
): CompositeWorkloadAttestor {
  const attestors = context.config.workloadAttestors.map(({ type, options }) => {
    const plugin = Object.hasOwn(registry, type) ? registry[type] : undefined;
    if (plugin === undefined) {
      throw new Error(`workload attestor ${JSON.stringify(type)} is not registered (known: ${knownTypes(registry)})`);
    }
    const unknown = Object.keys(options).find((name) => !plugin.optionNames.includes(name));
    if (unknown !== undefined) throw new Error(`workload attestor ${type}: ${unknownOptionProblem(plugin, unknown)}`);
    const attestor = plugin.create({ ...context, options });
    if (attestor.type !== type) {
      throw new Error(
        `workload attestor registered as ${JSON.stringify(type)} has type ${JSON.stringify(attestor.type)}`,
      );
    }
    return attestor;
  });
  return new CompositeWorkloadAttestor(attestors, { timeoutMs: context.config.workloadAttestationTimeoutMs });
}

/** The message for an option `plugin` does not take. */
export function unknownOptionProblem(plugin: WorkloadAttestorPlugin, name: string): string {
  const known = plugin.optionNames.length > 0 ? plugin.optionNames.join(', ') : 'none';
  return `unknown option ${JSON.stringify(name)} (known: ${known})`;
}

/** The registered types, for messages: `unix, k8s`. */
export function knownTypes(registry: Readonly<Record<string, unknown>> = WORKLOAD_ATTESTORS): string {
  return Object.keys(registry).join(', ');
}
