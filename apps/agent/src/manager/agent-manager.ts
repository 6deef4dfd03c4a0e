import { type ContextLogger } from '@sigil/logging';
import { type KeyType, createCsr, exportPrivateKeyPkcs8, generateKeyPair } from '@sigil/pki';
import { SIGIL_AGENT_PATH_PREFIX, type Clock, systemClock } from '@sigil/runtime';
import {
  type TrustBundle,
  type TrustDomain,
  idFromCertificate,
  parseX509Svid,
  verifyX509Svid,
  nodeCertificateFromDer,
} from '@sigil/spiffe';
import { type AgentSvidResponse } from '@sigil/agent-api';
import { type AttestationApi, type NodeAttestor, attestNode } from '../attestor/node/node-attestor.js';
import { createNodeAttestor, type NodeAttestorFactory } from '../attestor/node/node-attestors.js';
import { AgentApiError, retryDelayMs, type ServerClient } from '../client/server-client.js';
import { ServerNotTrustedError, ServerUnavailableError } from '../client/tls-transport.js';
import { Backoff, sleep } from '../common/backoff.js';
import { type NodeAttestationConfig } from '../config.js';
import { type AgentState, type AgentStorage, DataDirInUseError, decideResume } from '../storage/agent-storage.js';
import { rotationTime } from './rotation.js';
import { addIssuer, chainIssuerIds, taintedRotationTime } from './svid-issuers.js';
import { type AgentIdentity, type CurrentAgentSvid } from './agent-identity.js';

export interface AgentManagerOptions {
  readonly attestation: NodeAttestationConfig | undefined;
  /** The attestors `attestation` may name, by type; by default NODE_ATTESTORS (a test may add its own). */
  readonly nodeAttestors?: Readonly<Record<string, NodeAttestorFactory>>;
  readonly trustDomain: TrustDomain | undefined;
  /** Told about every new bundle of our trust domain (attestation, re-attestation). */
  readonly onBundle?: (bundle: TrustBundle) => void;
  readonly clock?: Clock;
  readonly random?: () => number;
  readonly keyType?: KeyType;
  readonly backoff?: Backoff;
  readonly logger?: Pick<ContextLogger, 'log' | 'warn' | 'error'>;
  /** Told how each node attestation and agent SVID renewal ended (metrics). */
  readonly onAttestation?: (method: string, outcome: 'ok' | 'failed') => void;
  readonly onRenewal?: (outcome: 'ok' | 'failed') => void;
  /** Told when a taint brought the renewal of the agent's own SVID forward (metrics). */
  readonly onTaintedSvid?: () => void;
  /** Told after each save of the agent state: undefined when it succeeded, else why it failed (metrics). */
  readonly onSaved?: (failure: string | undefined) => void;
}

/** The agent cannot go on (refused by the server and unable to attest again); the message says what to do. */
export class AgentFatalError extends Error {
  override readonly name = 'AgentFatalError';
  /**
   * True when only the operator can help (no attestor configured, a spent single-use credential): exit
   * {@link AGENT_FATAL_EXIT_CODE}, not restarted. False when a later start may succeed: a refusal of a credential the
   * node can present again (x509pop, k8s_psat) may be passing (a challenge voided by someone behind the same address,
   * a replica in trouble, clocks apart), so the agent exits {@link AGENT_RESTART_EXIT_CODE} and its service manager
   * starts it again, as SPIRE's agent is.
   */
  readonly operatorMustAct: boolean;

  /** The server's refusal behind this stop, when there was one. */
  readonly refusal: AgentApiError | undefined;

  constructor(message: string, options: { operatorMustAct?: boolean; refusal?: AgentApiError } = {}) {
    super(message);
    this.operatorMustAct = options.operatorMustAct ?? true;
    this.refusal = options.refusal;
  }

  /** The same stop, with more said about it. */
  explained(message: string): AgentFatalError {
    return new AgentFatalError(message, { operatorMustAct: this.operatorMustAct });
  }
}

/**
 * The exit code of `sigil-agent run` for an {@link AgentFatalError} the operator must act on: sysexits' EX_CONFIG (78)
 * (a new join token, a node attestor to configure). The systemd unit names it in `RestartPreventExitStatus`, so the
 * agent is not restarted every few seconds only to print the same message again.
 */
export const AGENT_FATAL_EXIT_CODE = 78;
/** The exit code of `sigil-agent run` for an {@link AgentFatalError} that another start may get past: restarted. */
export const AGENT_RESTART_EXIT_CODE = 1;

/** How `sigil-agent run` exits for this stop. */
export function exitCodeOf(error: AgentFatalError): number {
  return error.operatorMustAct ? AGENT_FATAL_EXIT_CODE : AGENT_RESTART_EXIT_CODE;
}

/** A stop for an attestation that failed with `error` (an {@link AgentFatalError} keeps its kind; others restart). */
function attestationStop(message: string, error: unknown): AgentFatalError {
  return error instanceof AgentFatalError
    ? error.explained(message)
    : new AgentFatalError(message, { operatorMustAct: false });
}

/** Longest a renewal timer sleeps before looking again. */
const MAX_TIMER_MS = 60_000;
/** Longest wait between two attempts to save the agent state after the data dir could not be written. */
const SAVE_RETRY_MAX_MS = 10_000;

/**
 * The agent's own identity over its life (SPIRE `pkg/agent/attestor/node` + the agent SVID rotation of
 * `pkg/agent/manager`): resume from the data dir when the stored SVID is still good, else attest; renew the SVID at
 * half life (± 10 %) with a fresh key; and when the server no longer accepts the agent (evicted, unknown, expired
 * SVID), attest again if the attestor allows it (any but a single-use credential already used) or stop with a clear
 * message.
 */
export class AgentManager {
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly backoff: Backoff;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private reattesting: Promise<void> | undefined;
  private renewAt: Date | undefined;
  /** Authority IDs that issued the current agent SVID. */
  private issuers: readonly string[] = [];
  private tainted: ReadonlySet<string> = new Set();
  private renewing: Promise<void> | undefined;
  /** Set once the server refused this agent a re-attestation in place of a renewal (see renewByAttesting). */
  private serverRefusesReattestation = false;
  private failFatal: ((error: AgentFatalError) => void) | undefined;
  /** Set while the data dir could not be written (a full disk): the state in memory is saved again on a timer. */
  private unsaved: { readonly reason: string } | undefined;
  private saveTimer: NodeJS.Timeout | undefined;
  private readonly saveBackoff: Backoff;
  private readonly attestor: NodeAttestor | undefined;
  /** Settles when the agent must stop; never resolves while all is well. */
  readonly fatal: Promise<AgentFatalError>;

  constructor(
    private readonly identity: AgentIdentity,
    private readonly client: AttestationApi & Pick<ServerClient, 'renew'>,
    private readonly storage: AgentStorage,
    private readonly options: AgentManagerOptions,
  ) {
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.backoff = options.backoff ?? new Backoff(1000, 30_000, this.random);
    this.saveBackoff = new Backoff(1000, SAVE_RETRY_MAX_MS, this.random);
    this.attestor = options.attestation && createNodeAttestor(options.attestation, options.nodeAttestors);
    this.fatal = new Promise((resolve) => {
      this.failFatal = resolve;
    });
  }

  /**
   * Resumes or attests, then arms the renewal timer. Throws {@link AgentFatalError} when neither is possible;
   * retries with backoff while no server can be reached or the server is busy (429, 503).
   */
  async start(): Promise<void> {
    try {
      await this.storage.prepare();
    } catch (error) {
      // Another agent may be on its way out (a restart that overlapped): exit 1, restarted, rather than 78.
      if (error instanceof DataDirInUseError) {
        throw new AgentFatalError(`cannot start: ${error.message}`, { operatorMustAct: false });
      }
      throw error;
    }
    try {
      await this.resumeOrAttest();
    } catch (error) {
      this.storage.release();
      throw error;
    }
    this.arm();
  }

  private async resumeOrAttest(): Promise<void> {
    const removed = await this.storage.removeStaleTemporaries();
    if (removed.length > 0) {
      this.options.logger?.warn({ msg: 'removed the temporary files of an interrupted save', files: removed });
    }
    let stored: AgentState | undefined;
    let unreadable: string | undefined;
    try {
      stored = await this.storage.load(this.options.trustDomain);
    } catch (error) {
      // The message names the file (agent-storage); the agent attests again where its method allows it.
      unreadable = `the stored agent state is unreadable (${(error as Error).message})`;
      this.options.logger?.error({ msg: 'stored agent state is unreadable, ignoring it', reason: unreadable });
    }
    const decision =
      unreadable === undefined
        ? await decideResume(stored, { now: this.clock.now(), trustDomain: this.options.trustDomain })
        : { resume: false as const, reason: unreadable };
    if (decision.resume) {
      this.install(decision.state, this.clock.now());
      this.options.logger?.log({
        msg: 'resumed with the stored agent SVID, no attestation needed',
        agentId: decision.spiffeId.toString(),
        expiresAt: decision.expiresAt.toISOString(),
      });
    } else {
      // Whom the agent trusted last: its attestation trusts the data dir's bundle as well as the configured one.
      if (stored !== undefined) this.identity.useStoredBundle(stored.bundle);
      const attestor = this.attestor;
      if (attestor === undefined) {
        throw new AgentFatalError(
          `cannot start: ${decision.reason}, and no node attestor is configured (--node-attestor, --join-token or --x509pop-cert/--x509pop-key)`,
        );
      }
      const { singleUse } = attestor;
      if (singleUse !== undefined && stored?.usedCredentialSha256 === singleUse.sha256) {
        throw new AgentFatalError(
          `cannot start: ${decision.reason}, and the configured ${singleUse.name} was already used by this agent: ` +
            `${singleUse.renewal} and pass it with ${singleUse.flag}`,
        );
      }
      this.options.logger?.log({ msg: 'attesting this node', method: attestor.type, reason: decision.reason });
      try {
        await this.retryWhileUnavailable(() => this.attest(attestor));
      } catch (error) {
        // Say why the agent attested at all: an operator reading "join token refused" after a corrupt state file
        // must learn that the file is the cause.
        if (error instanceof AgentFatalError)
          throw error.explained(`${error.message} (attested because ${decision.reason})`);
        throw error;
      }
    }
  }

  /**
   * The server refused the agent's SVID (401/403 on an mTLS route): attest again when possible, else stop. Calls
   * during a re-attestation share it.
   */
  agentRefused(error: AgentApiError): void {
    if (this.stopped || this.reattesting !== undefined) return;
    // A request made with the SVID that a renewal in progress replaces is refused once a call with the new one made
    // it current ("SVID serial … is not the current one"): that is no verdict on the agent, so the renewal ends first
    // and the refusal is judged with the SVID it installed. (A taint renews the agent SVID while the rotator is busy
    // re-signing the workloads' SVIDs, so the two meet.)
    const renewing = this.renewing;
    this.reattesting = (async () => {
      await renewing?.catch(() => undefined);
      // Made with an SVID since replaced (renewed, or attested again in its place, while the request was under way):
      // no verdict on the one the agent holds now, which the server accepts or the next call finds out.
      if (error.sentWith !== undefined && error.sentWith !== this.identity.credentials()) {
        this.options.logger?.log({
          msg: 'a request made with the previous agent SVID was refused; the agent holds a newer one',
          reason: error.message,
        });
        return;
      }
      await this.reattest(error);
    })().finally(() => {
      this.reattesting = undefined;
    });
  }

  /**
   * The server's tainted authority IDs (from the sync): when one of them issued the agent's SVID, its renewal comes
   * forward to a random instant within the taint window, as for the workloads' SVIDs. An unchanged set does nothing.
   */
  taint(tainted: ReadonlySet<string>): void {
    if (tainted.size === this.tainted.size && [...tainted].every((id) => this.tainted.has(id))) return;
    this.tainted = tainted;
    this.forceRenewalIfTainted();
  }

  /** The authorities that issued the agent's own SVID, with its expiry (the sync's report). */
  svidIssuers(): Map<string, Date> {
    const current = this.identity.current();
    const issuers = new Map<string, Date>();
    if (current === undefined || current.expiresAt.getTime() <= this.clock.now().getTime()) return issuers;
    for (const id of this.issuers) addIssuer(issuers, id, current.expiresAt);
    return issuers;
  }

  private forceRenewalIfTainted(): void {
    if (this.renewAt === undefined || !this.issuers.some((id) => this.tainted.has(id))) return;
    const renewAt = taintedRotationTime(this.renewAt, this.clock.now(), this.random);
    if (renewAt.getTime() >= this.renewAt.getTime()) return;
    this.renewAt = renewAt;
    this.options.logger?.log({
      msg: 'the agent SVID was issued by a tainted authority, renewing it early',
      renewAt: renewAt.toISOString(),
    });
    this.options.onTaintedSvid?.();
    if (this.renewing === undefined && this.reattesting === undefined) this.arm();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.saveTimer);
    await Promise.allSettled([this.reattesting, this.renewing]);
    this.storage.release();
  }

  private async reattest(refusal: AgentApiError): Promise<void> {
    const attestor = this.attestor;
    const spent = this.spentCredential();
    if (attestor === undefined || spent !== undefined) {
      const confirmed = await this.confirmRefusal(refusal);
      if (confirmed === undefined) return;
      this.failFatal?.(
        new AgentFatalError(
          `the server refused this agent (${confirmed.message})${this.taintedIssuerCause()} and it cannot attest again: ` +
            (spent === undefined
              ? 'no attestation method is configured'
              : `its ${spent.name} was already used; ${spent.renewal} and restart the agent with ${spent.flag}`),
        ),
      );
      return;
    }
    this.options.logger?.warn({
      msg: 'the server refused this agent, attesting again',
      method: attestor.type,
      reason: refusal.message,
    });
    try {
      await this.retryWhileUnavailable(() => this.attest(attestor));
      this.arm();
    } catch (error) {
      this.failFatal?.(attestationStop(`re-attestation failed: ${(error as Error).message}`, error));
    }
  }

  /**
   * Before an agent that cannot attest again gives up for good, one renewal, the call that proves who it is, must be
   * refused too: a refusal seen once may come from a server in trouble rather than from an eviction. Returns the
   * refusal that stands, or undefined when the server accepted the agent after all (or could not be reached, in
   * which case the renewal timer tries again later).
   */
  private async confirmRefusal(refusal: AgentApiError): Promise<AgentApiError | undefined> {
    try {
      await this.renew();
      this.options.logger?.warn({
        msg: 'the server refused this agent once, then renewed its SVID',
        reason: refusal.message,
      });
      this.arm();
      return undefined;
    } catch (error) {
      if (error instanceof AgentApiError && error.isAgentRefused()) return error;
      this.arm(new Date(this.clock.now().getTime() + this.backoff.next()));
      return undefined;
    }
  }

  /**
   * The agent SVID expired before a renewal got through (a server outage, or a CA rotation the agent missed: the
   * server's certificate no longer chains to its bundle). No renewal can succeed with it: attest again where the
   * method allows it, authenticating the server by {@link AgentIdentity.attestationTrust}. A spent join token cannot:
   * the agent says what to do and keeps serving what it holds (the server refuses it as soon as it answers, which
   * stops it).
   */
  private svidExpired(current: CurrentAgentSvid): void {
    if (this.stopped || this.reattesting !== undefined) return;
    const attestor = this.attestor;
    const spent = this.spentCredential();
    const expiredAt = current.expiresAt.toISOString();
    if (attestor === undefined || spent !== undefined) {
      this.options.logger?.error({
        msg: 'the agent SVID expired before it could be renewed and this agent cannot attest again',
        expiredAt,
        remedy:
          spent === undefined
            ? 'configure a node attestor and restart the agent'
            : `its ${spent.name} was already used; ${spent.renewal} and restart the agent with ${spent.flag}`,
      });
      this.arm(new Date(this.clock.now().getTime() + MAX_TIMER_MS));
      return;
    }
    this.options.logger?.warn({
      msg: 'the agent SVID expired before it could be renewed, attesting again',
      method: attestor.type,
      expiredAt,
    });
    this.reattesting = (async () => {
      try {
        await this.retryWhileUnavailable(() => this.attest(attestor));
        this.arm();
      } catch (error) {
        if (!this.stopped)
          this.failFatal?.(attestationStop(`re-attestation failed: ${(error as Error).message}`, error));
      }
    })().finally(() => {
      this.reattesting = undefined;
    });
  }

  /**
   * Why a refusal is no eviction when the agent SVID was issued by a key the server tainted: the server stopped
   * trusting that key (revoked with force, or for a nested server the top root it chains to removed) before this
   * agent re-signed, so the SVID no longer authenticates it. Empty otherwise.
   */
  private taintedIssuerCause(): string {
    const tainted = this.issuers.filter((id) => this.tainted.has(id));
    if (tainted.length === 0) return '';
    return (
      `: its SVID was issued by the tainted X.509 authority ${tainted.join(', ')}, which the server no longer ` +
      'trusts (revoked, or the upstream root it chains to removed, before this agent re-signed)'
    );
  }

  /** The configured single-use credential when this agent already attested with it. */
  private spentCredential(): NodeAttestor['singleUse'] {
    const singleUse = this.attestor?.singleUse;
    const used = this.identity.current()?.state.usedCredentialSha256;
    return singleUse !== undefined && singleUse.sha256 === used ? singleUse : undefined;
  }

  /** What an operator does when no server presents a certificate the agent trusts (README, "Recovery after …"). */
  private untrustedServerRemedy(): string {
    const file = this.identity.trustBundleFile;
    if (file !== undefined) {
      return (
        `if the server's CA rotated while this agent was offline, write the current bundle ('sigil-server bundle ` +
        `show') to ${file}: the agent reads it again before every attestation attempt`
      );
    }
    return (
      'this agent holds a bundle from an earlier attestation, so --insecure-bootstrap no longer applies to it: ' +
      "restart it with --trust-bundle holding the current bundle ('sigil-server bundle show')"
    );
  }

  private async attest(attestor: NodeAttestor): Promise<void> {
    try {
      await this.attestOnce(attestor);
      this.options.onAttestation?.(attestor.type, 'ok');
    } catch (error) {
      this.options.onAttestation?.(attestor.type, 'failed');
      throw error;
    }
  }

  private async attestOnce(attestor: NodeAttestor): Promise<void> {
    // The configured trust bundle as it is now: an operator (or a config map) may have written the current one.
    const unreadable = await this.identity.reloadTrustBundle();
    if (unreadable !== undefined) {
      this.options.logger?.warn({ msg: 'cannot read the trust bundle file again, using its last copy', unreadable });
    }
    const keys = await generateKeyPair(this.options.keyType);
    const privateKeyPkcs8 = exportPrivateKeyPkcs8(keys.privateKey);
    const csr = await createCsr({ keys });
    let response;
    try {
      response = await attestNode(this.client, attestor, csr.pem);
    } catch (error) {
      if (error instanceof AgentApiError && !isServerBusy(error)) {
        // A single-use credential the server refused stays refused; a node credential may be accepted next time.
        throw new AgentFatalError(`node attestation (${attestor.type}) refused by the server: ${error.message}`, {
          operatorMustAct: attestor.singleUse !== undefined,
          refusal: error,
        });
      }
      throw error;
    }
    const receivedAt = this.clock.now();
    await this.checkAgentSvid(response, privateKeyPkcs8, response.bundle, receivedAt);
    const state: AgentState = {
      svidChain: response.chain,
      privateKeyPkcs8,
      bundle: response.bundle,
      attestationMethod: attestor.type,
      ...(attestor.singleUse !== undefined && { usedCredentialSha256: attestor.singleUse.sha256 }),
    };
    this.install(state, receivedAt);
    await this.persist();
    this.options.onBundle?.(response.bundle);
    this.options.logger?.log({
      msg: 'node attested',
      agentId: response.spiffeId.toString(),
      method: attestor.type,
      expiresAt: response.expiresAt.toISOString(),
    });
  }

  /**
   * Renews the agent SVID. An agent whose attestation method can attest again (x509pop, k8s_psat: any but a
   * single-use credential) attests again instead, as SPIRE's agent does for a reattestable node, and the server refuses
   * it a plain renewal ("must reattest instead of renew"): its SVID stays bound to fresh evidence of the node. The
   * method is the one it attested with; an agent attested otherwise (a join token) renews.
   */
  private async renew(): Promise<void> {
    const current = this.identity.current();
    if (current === undefined) return;
    try {
      const attestor = this.attestor;
      if (
        attestor !== undefined &&
        attestor.singleUse === undefined &&
        current.state.attestationMethod === attestor.type &&
        !this.serverRefusesReattestation
      ) {
        await this.renewByAttesting(attestor, current);
      } else {
        await this.renewFrom(current);
      }
      this.options.onRenewal?.('ok');
    } catch (error) {
      this.options.onRenewal?.('failed');
      throw error;
    }
  }

  /**
   * Renews by attesting again. A server whose attestor of this type does not let an attested agent attest again (a
   * plug-in with `can_reattest=false`: 403) is asked for a renewal instead, now and, once that worked, from then on.
   */
  private async renewByAttesting(attestor: NodeAttestor, current: CurrentAgentSvid): Promise<void> {
    try {
      await this.attest(attestor);
    } catch (error) {
      if (!(error instanceof AgentFatalError) || error.refusal?.status !== 403) throw error;
      this.options.logger?.warn({
        msg: 'the server does not let this agent attest again: it renews its SVID instead',
        method: attestor.type,
        reason: error.refusal.message,
      });
      await this.renewFrom(current);
      // Only once the renewal route took it: a server that refuses both (a banned agent) is judged as any refusal.
      this.serverRefusesReattestation = true;
    }
  }

  private async renewFrom(current: CurrentAgentSvid): Promise<void> {
    const keys = await generateKeyPair(this.options.keyType);
    const privateKeyPkcs8 = exportPrivateKeyPkcs8(keys.privateKey);
    const response = await this.client.renew((await createCsr({ keys })).pem);
    const receivedAt = this.clock.now();
    const bundle = this.identity.ownBundle() ?? current.state.bundle;
    await this.checkAgentSvid(response, privateKeyPkcs8, bundle, receivedAt);
    if (!response.spiffeId.equals(current.spiffeId)) {
      throw new Error(
        `renewed agent SVID names ${response.spiffeId.toString()}, expected ${current.spiffeId.toString()}`,
      );
    }
    const state: AgentState = { ...current.state, bundle, svidChain: response.chain, privateKeyPkcs8 };
    this.install(state, receivedAt);
    await this.persist();
    this.options.logger?.log({
      msg: 'agent SVID renewed',
      agentId: response.spiffeId.toString(),
      expiresAt: response.expiresAt.toISOString(),
    });
  }

  /**
   * Persists a newer bundle of our trust domain; when the data dir cannot be written, the whole state is saved again
   * later (see {@link persist}).
   */
  async persistBundle(bundle: TrustBundle): Promise<void> {
    if (this.unsaved !== undefined) return this.persist();
    try {
      await this.storage.saveBundle(bundle);
    } catch (error) {
      this.saveFailed(error);
    }
  }

  /** Why the data dir holds an older state than the agent's (undefined when it is up to date). */
  unsavedReason(): string | undefined {
    return this.unsaved?.reason;
  }

  /**
   * Saves the current identity to the data dir. The server has recorded the new SVID by now and refuses the previous
   * one from the first call made with the new one, so an SVID that cannot be saved (a full disk) is still installed
   * and used from memory: the failure is logged as an error, the old files stay as they were (a save replaces all or
   * nothing), and the save is tried again with backoff until it succeeds. A restart meanwhile resumes from the old
   * files, which the server refuses once the new SVID was used: the agent then attests again where its method allows
   * it. (Killed before any such call, the agent resumes with them and renews again from them.)
   */
  private async persist(): Promise<void> {
    const current = this.identity.current();
    if (current === undefined) return;
    clearTimeout(this.saveTimer);
    try {
      await this.storage.save(current.state, current.spiffeId);
    } catch (error) {
      this.saveFailed(error);
      return;
    }
    this.saveBackoff.reset();
    if (this.unsaved !== undefined) {
      this.options.logger?.log({ msg: 'agent state saved to the data dir again', dataDir: this.storage.dataDir });
    }
    this.unsaved = undefined;
    this.options.onSaved?.(undefined);
  }

  private saveFailed(error: unknown): void {
    const reason = (error as Error).message;
    const delay = this.saveBackoff.next();
    this.options.logger?.error({
      msg: 'cannot save the agent state; the agent goes on with it in memory and will retry',
      reason,
      retryInMs: delay,
    });
    this.unsaved = { reason };
    this.options.onSaved?.(reason);
    clearTimeout(this.saveTimer);
    if (this.stopped) return;
    this.saveTimer = setTimeout(() => void this.persist(), delay);
  }

  private async checkAgentSvid(
    response: AgentSvidResponse,
    privateKeyPkcs8: Uint8Array,
    bundle: TrustBundle,
    now: Date,
  ): Promise<void> {
    const svid = await parseX509Svid([...response.chain], privateKeyPkcs8);
    const { trustDomain } = this.options;
    if (!svid.spiffeId.equals(response.spiffeId) || !svid.spiffeId.path.startsWith(SIGIL_AGENT_PATH_PREFIX)) {
      throw new Error(`server issued an agent SVID for ${svid.spiffeId.toString()}, not an agent ID`);
    }
    if (trustDomain !== undefined && !svid.spiffeId.trustDomain.equals(trustDomain)) {
      throw new Error(
        `server issued an agent SVID in trust domain ${svid.spiffeId.trustDomain.name}, not ${trustDomain.name}`,
      );
    }
    await verifyX509Svid([...response.chain], bundle, { now });
  }

  private install(state: AgentState, receivedAt: Date): void {
    const leaf = nodeCertificateFromDer(state.svidChain[0] as Uint8Array);
    const svid: CurrentAgentSvid = {
      state,
      spiffeId: idFromCertificate(state.svidChain[0] as Uint8Array),
      notBefore: new Date(leaf.validFrom),
      expiresAt: new Date(leaf.validTo),
      receivedAt,
    };
    this.identity.install(svid);
    this.issuers = chainIssuerIds(state.svidChain);
    this.renewAt = rotationTime({ notBefore: svid.notBefore, notAfter: svid.expiresAt }, receivedAt, this.random);
    // Resumed from disk, or renewed by a replica that had not heard of the taint yet: still issued by a tainted key.
    this.forceRenewalIfTainted();
  }

  /** Arms the renewal timer for `at` (default: the current SVID's renewal time). */
  private arm(at: Date | undefined = this.renewAt): void {
    clearTimeout(this.timer);
    if (this.stopped || at === undefined) return;
    const delay = Math.min(Math.max(0, at.getTime() - this.clock.now().getTime()), MAX_TIMER_MS);
    this.timer = setTimeout(() => {
      if (this.clock.now().getTime() < at.getTime()) {
        this.arm(at);
        return;
      }
      this.renewing ??= this.renewOnce().finally(() => {
        this.renewing = undefined;
      });
    }, delay);
  }

  private async renewOnce(): Promise<void> {
    const current = this.identity.current();
    if (current !== undefined && current.expiresAt.getTime() <= this.clock.now().getTime()) {
      this.svidExpired(current);
      return;
    }
    try {
      await this.renew();
      this.backoff.reset();
      this.arm();
    } catch (error) {
      if (error instanceof AgentApiError && error.isAgentRefused()) {
        this.agentRefused(error);
        return;
      }
      const delay = retryDelayMs(error, this.backoff.next());
      this.options.logger?.warn({
        msg: 'agent SVID renewal failed, will retry',
        retryInMs: delay,
        reason: (error as Error).message,
        ...(error instanceof ServerNotTrustedError && { remedy: this.untrustedServerRemedy() }),
      });
      this.arm(new Date(this.clock.now().getTime() + delay));
    }
  }

  /**
   * Runs `attempt` until it succeeds or fails for another reason than an unreachable or busy server (429, 503): a
   * server shedding load is no verdict on this agent, so it waits and asks again rather than exiting.
   */
  private async retryWhileUnavailable(attempt: () => Promise<void>): Promise<void> {
    for (;;) {
      try {
        await attempt();
        this.backoff.reset();
        return;
      } catch (error) {
        const unreachable = error instanceof ServerUnavailableError;
        if (!(unreachable || isServerBusy(error)) || this.stopped) throw error;
        // The server's Retry-After (429 over a limit) when it says more than the backoff.
        const delay = retryDelayMs(error, this.backoff.next());
        const untrusted = error instanceof ServerNotTrustedError;
        this.options.logger?.warn({
          msg: untrusted
            ? 'no server presented a certificate this agent trusts, cannot attest; will retry'
            : unreachable
              ? 'no server reachable for attestation, will retry'
              : 'server cannot attest this node now (busy, or a service it needs is unavailable), will retry',
          retryInMs: delay,
          reason: (error as Error).message,
          ...(untrusted && { remedy: this.untrustedServerRemedy() }),
        });
        await sleep(delay);
        if (this.stopped) throw error;
      }
    }
  }
}

/** A refusal that says "not now" (over a limit, or temporarily unavailable) rather than "not you". */
function isServerBusy(error: unknown): boolean {
  return error instanceof AgentApiError && (error.status === 429 || error.status === 503);
}
