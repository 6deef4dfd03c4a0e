import type { Type } from '@nestjs/common';
import type { AttestationRequestBody } from '@sigil/agent-api';
import type { FastParsedCsr } from '@sigil/pki';
import type { SpiffeId, TrustDomain } from '@sigil/spiffe';
import type { AgentSelector } from '../agents/agent.js';

/**
 * A node attestor, the server side (SPIRE's server `nodeattestor` plug-in): it answers one question, "given this
 * payload (and, if it asked, this challenge response), who is this node?". It returns the agent ID path suffix, the
 * node selectors and whether the node may attest again; the server builds the agent ID
 * (`spiffe://<td>/sigil/agent/<type>/<suffix…>`), checks the CSR, refuses banned agents, signs the agent SVID and
 * records the agent. SPIRE's plug-in runs the challenge–response inside one gRPC stream; over HTTP it is two
 * requests, so an attestor with a challenge keeps its outstanding challenges itself (in this replica's memory).
 *
 * An attestor is a Nest provider in a folder of its own under `node-attestation/`, listed once in
 * `NODE_ATTESTORS` (node-attestors.ts); `--node-attestor <type>[:option=value,…]` enables it (once, or once per
 * instance: {@link NodeAttestor.instanceOption}).
 */
export interface NodeAttestor<Request extends AttestationRequestBody = AttestationRequestBody> {
  /** SPIRE's plug-in name (`join_token`, `x509pop`): the agents' attestation type and the agent ID's first segment. */
  readonly type: string;
  /** The path segment of its routes: `POST /agent/v1/attest/<route>` (and `…/<route>/challenge`). */
  readonly route: string;
  /** The options `--node-attestor <type>:<option>=<value>` may set; any other is a config error. */
  readonly optionNames: readonly string[];
  /**
   * For an attestor that may be enabled more than once: the option (one of {@link optionNames}) whose value names
   * each instance (k8s_psat: `cluster`, one instance per cluster, as SPIRE's `clusters = { … }`). The attestor may
   * then be listed once per distinct value, and {@link configure} is called once per listing. Undefined: it may be
   * listed once.
   */
  readonly instanceOption?: string;
  /**
   * The class of the attestation request body, with class-validator rules: the body is checked against it (unknown
   * fields refused, each failure naming its field) before anything else, and it documents the route in OpenAPI.
   */
  readonly requestType: Type<Request>;
  /** The challenge step, for an attestor that asks one (SPIRE's challenge–response). */
  readonly challenge?: NodeAttestorChallenge;

  /**
   * Called at start when the attestor is enabled, with its options (only names from {@link optionNames}): once, or
   * once per instance for an attestor with an {@link instanceOption} (each call adds an instance).
   *
   * @throws NodeAttestorOptionError naming the option and what is wrong; the server does not start
   */
  configure(options: Readonly<Record<string, string>>, context: NodeAttestorContext): Promise<void>;

  /**
   * Verifies the evidence of a request that passed {@link requestType}'s rules. `csr` is the agent's request,
   * already parsed and its self-signature checked.
   *
   * @throws AppError `permission_denied` when the evidence does not prove the node's identity
   */
  attest(request: Request, csr: FastParsedCsr, call: AttestationCall): Promise<NodeAttestation>;
}

/** An attestor's challenge step: `POST /agent/v1/attest/<route>/challenge`. */
export interface NodeAttestorChallenge<Request = unknown, Response = unknown> {
  readonly requestType: Type<Request>;
  readonly responseType: Type<Response>;
  issue(request: Request, call: AttestationCall): Promise<Response>;
}

/** What the attestor finds: who the node is. */
export interface NodeAttestation {
  /** Path segments after `sigil/agent/<type>/`; each must be a valid SPIFFE ID path segment. */
  readonly agentIdSuffix: readonly string[];
  /** The node selectors recorded for the agent. */
  readonly selectors: readonly AgentSelector[];
  /**
   * Whether the same node may attest again while its agent is recorded (SPIRE's `CanReattest`): a new SVID then
   * replaces the old one. False: a second attestation of the same agent ID is refused.
   */
  readonly canReattest: boolean;
  /** Work to do once the node is known, before its SVID is signed (join token: the alias entry). */
  beforeIssue?(): Promise<void>;
}

/** The request being served. */
export interface AttestationCall {
  /** The TCP peer address; undefined on the local admin socket. */
  readonly remoteAddress: string | undefined;
}

/** What an attestor learns at start besides its options. */
export interface NodeAttestorContext {
  readonly trustDomain: TrustDomain;
  /**
   * The agent ID the server assigns for a suffix of this attestor, for an attestor whose selectors name it; the
   * server builds the same ID from {@link NodeAttestation.agentIdSuffix}.
   */
  agentId(...suffix: string[]): SpiffeId;
}

/** A bad option of an attestor; the registry prefixes the attestor and where it was configured. */
export class NodeAttestorOptionError extends Error {
  override readonly name = 'NodeAttestorOptionError';

  constructor(
    readonly option: string,
    message: string,
  ) {
    super(`option ${option}: ${message}`);
  }
}
