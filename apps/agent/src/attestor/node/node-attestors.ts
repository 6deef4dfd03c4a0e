import { JOIN_TOKEN_ATTESTOR, K8S_PSAT_ATTESTOR, X509POP_ATTESTOR } from '@sigil/agent-api';
import type { NodeAttestationConfig } from '../../config.js';
import { joinTokenAttestor } from './join-token/join-token.attestor.js';
import { k8sPsatAttestor } from './k8s-psat/k8s-psat.attestor.js';
import type { NodeAttestor } from './node-attestor.js';
import { x509popAttestor } from './x509pop/x509pop.attestor.js';

/** Builds an attestor from its options (checked by the agent configuration). */
export type NodeAttestorFactory = (options: Readonly<Record<string, string>>) => NodeAttestor;

/** Every node attestor of the agent, by type; a new one is one line here (and a folder beside this file). */
export const NODE_ATTESTORS: Readonly<Record<string, NodeAttestorFactory>> = Object.freeze({
  [JOIN_TOKEN_ATTESTOR.type]: joinTokenAttestor,
  [X509POP_ATTESTOR.type]: x509popAttestor,
  [K8S_PSAT_ATTESTOR.type]: k8sPsatAttestor,
});

/**
 * The attestor the configuration names.
 *
 * @throws Error for a type the agent does not have
 */
export function createNodeAttestor(
  config: NodeAttestationConfig,
  attestors: Readonly<Record<string, NodeAttestorFactory>> = NODE_ATTESTORS,
): NodeAttestor {
  const factory = Object.hasOwn(attestors, config.type) ? attestors[config.type] : undefined;
  if (factory === undefined) {
    throw new Error(`node attestor ${config.type}: unknown (known: ${Object.keys(attestors).join(', ')})`);
  }
  return factory(config.options);
}
