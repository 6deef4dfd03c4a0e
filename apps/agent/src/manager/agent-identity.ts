import { PEM_LABEL, certificatesToPem, toPem } from '@sigil/pki';
import { type SpiffeId, type TrustBundle, type TrustDomain } from '@sigil/spiffe';
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
 */
export class AgentIdentity {
  private svid: CurrentAgentSvid | undefined;
  private credentialsPem: ClientCredentials | undefined;
  private bundle: TrustBundle | undefined;

  constructor(
    private readonly bootstrap: BootstrapTrust,
    private readonly trustDomain: TrustDomain | undefined,
  ) {}

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
