import { Check, Column, Entity, Index, PrimaryColumn } from 'typeorm';
import type { AgentSelector } from './agent.js';

/** An attested agent (SPIRE `attested_node_entries`, its selectors from `node_resolver_map_entries` kept as JSON). */
@Entity({ name: 'agents' })
@Index('agents_attestation_type_idx', ['attestationType'])
@Index('agents_svid_expires_at_idx', ['svidExpiresAt'])
@Check('agents_svid_issuers_check', "svid_issuers IS NULL OR jsonb_typeof(svid_issuers) = 'object'")
export class AgentEntity {
  @PrimaryColumn({ name: 'spiffe_id', type: 'text', primaryKeyConstraintName: 'agents_pkey' })
  spiffeId!: string;

  /** How the agent attested: the node attestor's type (`join_token`, `x509pop`, …). */
  @Column({ name: 'attestation_type', type: 'text' })
  attestationType!: string;

  /** Serial number (hex) of the agent's current X509-SVID; its renewed SVID replaces it once used. */
  @Column({ name: 'serial_number', type: 'text' })
  serialNumber!: string;

  @Column({ name: 'svid_expires_at', type: 'timestamptz' })
  svidExpiresAt!: Date;

  /**
   * Serial number (hex) of the agent's renewed X509-SVID, not used yet (SPIRE's `new_serial_number`): accepted like
   * the current one, and promoted to it by the first call made with it. Null when no renewal is pending.
   */
  @Column({ name: 'new_serial_number', type: 'text', nullable: true })
  newSerialNumber!: string | null;

  @Column({ name: 'new_svid_expires_at', type: 'timestamptz', nullable: true })
  newSvidExpiresAt!: Date | null;

  /**
   * Replacements of the unused renewed SVID (a renewal again from the current serial) in the window that began at
   * `newSerialReplacementsSince`; bounded by `UNUSED_SVID_REPLACEMENTS` (agent.ts). Reset by re-attestation.
   */
  @Column({ name: 'new_serial_replacements', type: 'integer', default: 0, select: false })
  newSerialReplacements!: number;

  @Column({ name: 'new_serial_replacements_since', type: 'timestamptz', nullable: true, select: false })
  newSerialReplacementsSince!: Date | null;

  @Column({ name: 'selectors', type: 'jsonb' })
  selectors!: readonly AgentSelector[];

  /** Whether the node attestor lets this agent attest again under the same ID (x509pop, k8s_psat; not join_token). */
  @Column({ name: 'can_reattest', type: 'boolean', default: false })
  canReattest!: boolean;

  /** A banned agent keeps its row so that it cannot attest again under the same ID until evicted. */
  @Column({ name: 'banned', type: 'boolean', default: false })
  banned!: boolean;

  @Column({ name: 'created_at', type: 'timestamptz', default: () => 'now()' })
  createdAt!: Date;

  @Column({ name: 'updated_at', type: 'timestamptz', default: () => 'now()' })
  updatedAt!: Date;

  /**
   * The agent's last report of the authorities that issued the SVIDs it holds: authority ID -> latest expiry (unix
   * seconds); null until it reports. Read by `localauthority … revoke` (ca/authority-usage.ts).
   */
  @Column({ name: 'svid_issuers', type: 'jsonb', nullable: true, select: false })
  svidIssuers!: Record<string, number> | null;

  @Column({ name: 'last_seen_at', type: 'timestamptz', nullable: true })
  lastSeenAt!: Date | null;
}
