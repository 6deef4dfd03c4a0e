import { readFile } from 'node:fs/promises';
import { PEM_LABEL, certificatesToPem, toPem } from '@sigil/pki';
import { type SpiffeId, TrustBundle, type TrustDomain } from '@sigil/spiffe';
import { parseTrustBundleFile } from '../config-files.js';
import { type ClientCredentials, type ServerTrust } from '../client/tls-transport.js';
import { type BootstrapTrust } from '../config.js';
import { type AgentState } from '../storage/agent-storage.js';

/** The agent's current SVID, as the manager last installed it. */
export interface CurrentAgentSvid {
  readonly state: AgentState;
  readonly spiffeId: SpiffeId;
  readonly notBefore: Date;
  readonly expiresAt: Date;
  /** When the agent received it (or loaded it from disk). */
  readonly receivedAt: Date;
}

/**
 * Who the agent is right now and whom it trusts: its SVID (the mTLS client certificate) and the bundle of its trust
 * domain (which authenticates servers). Before the first attestation the server is authenticated by the bootstrap
 * trust (`--trust-bundle`, or only its claimed ID with `--insecure-bootstrap`); from then on always by the latest
 * bundle the server sent, which the CA rotation keeps current.
 *
 * A node attestation (the first, or again after a long absence) authenticates the server by
 * {@link attestationTrust}: the latest bundle the agent holds and the configured trust bundle together, never by
 * the claimed ID alone once a bundle was stored (README, sigil-agent, "Recovery after long absences").
 */
export class AgentIdentity {
  private svid: CurrentAgentSvid | undefined;
  private credentialsPem: ClientCredentials | undefined;
  private bundle: TrustBundle | undefined;
  /** The bundle kept in the data dir when the stored SVID could not be resumed (expired, unusable). */
  private storedBundle: TrustBundle | undefined;
  /** The configured `--trust-bundle`, as last read from its file. */
  private configured: TrustBundle | undefined;
  private union: { readonly parts: readonly (TrustBundle | undefined)[]; readonly trust: ServerTrust } | undefined;

  constructor(
    private readonly bootstrap: BootstrapTrust,
    private readonly trustDomain: TrustDomain | undefined,
  ) {
    this.configured = bootstrap.kind === 'bundle' ? bootstrap.bundle : undefined;
  }

  /**
   * How to authenticate the server for a node attestation: every CA of the latest bundle the agent holds (the
   * server's last, or the data dir's when the stored SVID could not be resumed) and of the configured trust bundle;
   * only with neither (insecure bootstrap, nothing stored) the server's claimed ID alone. Each source is trusted on
   * its own already (a resuming agent trusts its stored bundle, a fresh install its trust bundle), so the union trusts
   * no CA that the same configuration would not trust anyway; and once a bundle was stored, insecure bootstrap is
   * over for good.
   */
  attestationTrust(): ServerTrust {
    const latest = this.bundle ?? this.storedBundle;
    const parts = [latest, this.configured];
    if (this.union !== undefined && this.union.parts.every((part, index) => part === parts[index])) {
      return this.union.trust;
    }
    let trust: ServerTrust;
    if (latest === undefined || this.configured === undefined) {
      const only = latest ?? this.configured;
      trust =
        only === undefined ? { kind: 'insecure', trustDomain: this.trustDomain } : { kind: 'bundle', bundle: only };
    } else {
      trust = {
        kind: 'bundle',
        bundle: TrustBundle.create(latest.trustDomain, {
          x509Authorities: [...latest.x509AuthoritiesDer(), ...this.configured.x509AuthoritiesDer()],
        }),
      };
    }
    this.union = { parts, trust };
    return trust;
  }

  /** Trusts the data dir's bundle for attestation (its SVID could not be resumed); another trust domain's is ignored. */
  useStoredBundle(bundle: TrustBundle): void {
    if (this.trustDomain !== undefined && !bundle.trustDomain.equals(this.trustDomain)) return;
    this.storedBundle = bundle;
  }

  /** Whether the agent holds a bundle from an earlier attestation (so insecure bootstrap no longer applies). */
  holdsBundle(): boolean {
    return this.bundle !== undefined || this.storedBundle !== undefined;
  }

  /** The configured trust bundle file, if any. */
  get trustBundleFile(): string | undefined {
    return this.bootstrap.kind === 'bundle' ? this.bootstrap.file : undefined;
  }

  /**
   * Reads the configured trust bundle file again (before each attestation attempt: an operator or a config map may
   * have replaced it with the current bundle). Returns why it could not, keeping the copy read before.
   */
  async reloadTrustBundle(): Promise<string | undefined> {
    const file = this.trustBundleFile;
    if (file === undefined) return undefined;
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      return `${file}: cannot read: ${(error as Error).message}`;
    }
    const parsed = parseTrustBundleFile(text, this.configured?.trustDomain ?? this.trustDomain);
    if (typeof parsed === 'string') return `${file} ${parsed}`;
    // An unchanged file keeps the bundle object, and so the connections made with it.
    if (this.configured === undefined || !parsed.bundle.equals(this.configured)) this.configured = parsed.bundle;
    return undefined;
  }

  /** How to authenticate servers now. */
  trust(): ServerTrust {
    if (this.bundle !== undefined) return { kind: 'bundle', bundle: this.bundle };
    if (this.bootstrap.kind === 'bundle') return { kind: 'bundle', bundle: this.bootstrap.bundle };
    return { kind: 'insecure', trustDomain: this.trustDomain };
  }

  /** The agent SVID as PEM for the TLS client; undefined before attestation. */
  credentials(): ClientCredentials | undefined {
    return this.credentialsPem;
  }

  /**
   * The agent SVID to present when attesting again, while it is valid at `now`: the server then charges the
   * attestation to this agent's own attestation budget rather than its source address's, which others behind the same
   * address (a NAT, a load balancer) could have spent (README, "Limits"). Undefined before the first
   * attestation and once the SVID expired: the attestation goes without a client certificate.
   */
  attestationCredentials(now: Date): ClientCredentials | undefined {
    const svid = this.svid;
    if (svid === undefined || now < svid.notBefore || now >= svid.expiresAt) return undefined;
    return this.credentialsPem;
  }

  /** The bundle of our trust domain, once the server sent one (or it was loaded from disk). */
  ownBundle(): TrustBundle | undefined {
    return this.bundle;
  }

  /** The current agent SVID. */
  current(): CurrentAgentSvid | undefined {
    return this.svid;
  }

  /** Installs a new agent SVID (and the bundle that came with it). */
  install(svid: CurrentAgentSvid): void {
    this.svid = svid;
    this.bundle = svid.state.bundle;
    this.credentialsPem = {
      certificateChainPem: certificatesToPem([...svid.state.svidChain]),
      privateKeyPem: toPem(PEM_LABEL.privateKey, svid.state.privateKeyPkcs8),
    };
  }

  /** Installs a newer bundle of our trust domain. */
  setBundle(bundle: TrustBundle): void {
    this.bundle = bundle;
    if (this.svid !== undefined) this.svid = { ...this.svid, state: { ...this.svid.state, bundle } };
  }
}
