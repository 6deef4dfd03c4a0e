/** A node selector found by node attestation, e.g. `{ type: 'join_token', value: '…' }`. */
export interface AgentSelector {
  readonly type: string;
  readonly value: string;
}

/** An attested agent as the rest of the server sees it. */
export interface AttestedAgent {
  readonly spiffeId: string;
  readonly attestationType: string;
  readonly serialNumber: string;
  readonly svidExpiresAt: Date;
  readonly selectors: readonly AgentSelector[];
  readonly banned: boolean;
  /** Whether its node attestor lets it attest again under the same ID. */
  readonly canReattest: boolean;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly lastSeenAt: Date | null;
}
