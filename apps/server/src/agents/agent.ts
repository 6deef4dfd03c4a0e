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
  /** The renewed SVID's serial number, until the agent first uses it (then it becomes `serialNumber`); else null. */
  readonly newSerialNumber: string | null;
  readonly newSvidExpiresAt: Date | null;
  readonly selectors: readonly AgentSelector[];
  readonly banned: boolean;
  /** Whether its node attestor lets it attest again under the same ID. */
  readonly canReattest: boolean;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly lastSeenAt: Date | null;
}

/**
 * Whether the agent may call with the SVID of this serial number: its current SVID, or the renewed one it has not used
 * yet (SPIRE keeps both, so an agent that lost its renewal keeps working with the previous SVID). A banned agent's
 * serials are not looked at here.
 */
export function holdsSerial(agent: Pick<AttestedAgent, 'serialNumber' | 'newSerialNumber'>, serial: string): boolean {
  return agent.serialNumber === serial || (agent.newSerialNumber !== null && agent.newSerialNumber === serial);
}

/**
 * How often an agent may replace its renewed SVID while it is still unused (a renewal again from the current serial):
 * at most `max` times in `windowMs`, counted from the first replacement of a window. An agent loses its renewal only
 * when killed (or its disk full, or the answer lost) between the server's answer and its use, so a legitimate agent
 * stays far below; a thief of the current SVID and key renewing in turn with the agent does not. Beyond it the renewal
 * is refused (429, `Retry-After` at the window's end; the current SVID stays valid), logged and audited.
 */
export const UNUSED_SVID_REPLACEMENTS = { max: 5, windowMs: 10 * 60_000 } as const;
