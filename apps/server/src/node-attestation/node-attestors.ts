import { Inject, Injectable, Logger, type OnModuleInit, type Type } from '@nestjs/common';
import { sigilAgentId } from '@sigil/runtime';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { JoinTokenAttestor } from './join-token/join-token.attestor.js';
import { K8sPsatAttestor } from './k8s-psat/k8s-psat.attestor.js';
import type { NodeAttestor } from './node-attestor.js';
import { NodeAttestorOptionError } from './node-attestor.js';
import { X509popAttestor } from './x509pop/x509pop.attestor.js';

/** Every node attestor this server has; a new one is one line here (and a folder beside this file). */
export const NODE_ATTESTORS: readonly Type<NodeAttestor>[] = [JoinTokenAttestor, X509popAttestor, K8sPsatAttestor];

/** The injection token of the attestor instances: {@link NODE_ATTESTORS} and any a test adds. */
export const NODE_ATTESTOR_INSTANCES = Symbol('NODE_ATTESTOR_INSTANCES');

/** The enabled attestors, by route segment; built at start from the `--node-attestor` settings. */
@Injectable()
export class NodeAttestorRegistry implements OnModuleInit {
  private readonly logger = new Logger(NodeAttestorRegistry.name);
  private readonly enabled = new Map<string, NodeAttestor>();

  constructor(
    @Inject(NODE_ATTESTOR_INSTANCES) private readonly attestors: readonly NodeAttestor[],
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'trustDomain' | 'nodeAttestors'>,
  ) {}

  /**
   * Configures each enabled attestor with its options.
   *
   * @throws Error naming the setting, the attestor and the option when a setting is wrong: the server does not start
   */
  async onModuleInit(): Promise<void> {
    const byType = new Map(this.attestors.map((attestor) => [attestor.type, attestor]));
    this.refuseDuplicates(byType);
    for (const setting of this.config.nodeAttestors) {
      const attestor = byType.get(setting.type);
      const where = `${setting.source} ${setting.type}`;
      if (attestor === undefined) {
        throw new Error(
          `${setting.source}: unknown node attestor ${JSON.stringify(setting.type)} (known: ${[...byType.keys()].join(', ')})`,
        );
      }
      const unknown = Object.keys(setting.options).filter((name) => !attestor.optionNames.includes(name));
      if (unknown.length > 0) {
        const known = attestor.optionNames.length > 0 ? attestor.optionNames.join(', ') : 'none';
        throw new Error(`${where}: unknown option ${unknown.join(', ')} (known: ${known})`);
      }
      try {
        await attestor.configure(setting.options, {
          trustDomain: this.config.trustDomain,
          agentId: (...suffix) => sigilAgentId(this.config.trustDomain, attestor.type, ...suffix),
        });
      } catch (error) {
        if (error instanceof NodeAttestorOptionError) throw new Error(`${where}: ${error.message}`);
        throw error;
      }
      this.enabled.set(attestor.route, attestor);
    }
    this.logger.log({ msg: 'node attestors enabled', attestors: this.enabledTypes() });
  }

  /**
   * Refuses, before any attestor is configured, an attestor listed twice: one without an instance option at all,
   * one with it for the same value of that option (a listing without the option is left to the attestor's own
   * "required" message).
   */
  private refuseDuplicates(byType: ReadonlyMap<string, NodeAttestor>): void {
    const seen = new Set<string>();
    for (const setting of this.config.nodeAttestors) {
      const attestor = byType.get(setting.type);
      if (attestor === undefined) continue; // refused as unknown below
      const { instanceOption } = attestor;
      if (instanceOption === undefined) {
        if (seen.has(setting.type)) {
          const several = this.attestors.filter((attestor) => attestor.instanceOption !== undefined);
          const which = several.map((attestor) => `${attestor.type} (once per ${attestor.instanceOption})`);
          throw new Error(
            `${setting.source}: ${setting.type} is enabled twice (only ${which.join(', ') || 'none'} may be enabled more than once)`,
          );
        }
        seen.add(setting.type);
        continue;
      }
      const value = setting.options[instanceOption];
      if (value === undefined) continue;
      const key = `${setting.type}\0${value}`;
      if (seen.has(key)) {
        throw new Error(
          `${setting.source}: ${setting.type} is enabled twice for ${instanceOption} ${JSON.stringify(value)} (once per ${instanceOption})`,
        );
      }
      seen.add(key);
    }
  }

  /**
   * The enabled attestor at a route segment.
   *
   * @throws AppError `not_found` for an unknown or disabled one, listing the enabled ones
   */
  require(route: string): NodeAttestor {
    const attestor = this.enabled.get(route);
    if (attestor !== undefined) return attestor;
    const known = this.attestors.find((candidate) => candidate.route === route);
    const enabled = [...this.enabled.values()].map((each) => each.route).join(', ') || 'none';
    throw new AppError(
      'not_found',
      known === undefined
        ? `node attestor ${JSON.stringify(route)}: unknown (enabled on this server: ${enabled})`
        : `node attestor ${known.type}: not enabled on this server (enabled: ${enabled}); ` +
            `the server enables it with --node-attestor ${known.type}`,
    );
  }

  /** The type of the enabled attestor at a route segment, or undefined (metrics label only known types). */
  enabledTypeAt(route: string): string | undefined {
    return this.enabled.get(route)?.type;
  }

  /** What the attestation request at `route` takes from its address's budget before its body is read. */
  attestCost(route: string): number {
    // An attestor with a challenge step is charged at the challenge: the answer is bounded by the challenges,
    // so agents behind one NAT never strand a challenge on a refused answer.
    return this.enabled.get(route)?.challenge === undefined ? 1 : 0;
  }

  /** The enabled attestors' types, in the order they were configured (each once). */
  enabledTypes(): string[] {
    return [...this.enabled.values()].map((attestor) => attestor.type);
  }

  /** Every attestor this server has, enabled or not. */
  all(): readonly NodeAttestor[] {
    return this.attestors;
  }
}
