import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PEM_LABEL, certificatesToPem, pemBlocks, toPem } from '@sigil/pki';
import {
  SpiffeId,
  TrustBundle,
  type TrustDomain,
  certificateSummary,
  parseX509Svid,
  verifyX509Svid,
} from '@sigil/spiffe';
import { type AtomicFile, ensurePrivateDir, writeFilesAtomic } from '@sigil/runtime';
import { FileLock, FileLockHeldError } from '@sigil/runtime/file-lock';

/** How the agent attested when it got its current SVID: the node attestor's type (`join_token`, `x509pop`, …). */
export type AttestationMethod = string;

const ATTESTOR_TYPE = /^[a-z0-9_]+$/;

/** The agent's identity as it is kept on disk (SPIRE `pkg/agent/storage`). */
export interface AgentState {
  /** DER certificates of the agent SVID, leaf first. */
  readonly svidChain: readonly Uint8Array[];
  /** PKCS#8 DER of the agent SVID's private key. */
  readonly privateKeyPkcs8: Uint8Array;
  /** The latest bundle of our trust domain, with its `spiffe_sequence`. */
  readonly bundle: TrustBundle;
  readonly attestationMethod: AttestationMethod;
  /**
   * SHA-256 (hex) of the single-use credential (a join token) the agent attested with, to recognise one that was
   * already used.
   */
  readonly usedCredentialSha256?: string | undefined;
}

/** What `decideResume` concludes about the stored state. */
export type ResumeDecision =
  | { readonly resume: true; readonly state: AgentState; readonly spiffeId: SpiffeId; readonly expiresAt: Date }
  | { readonly resume: false; readonly reason: string };

export const SVID_FILE = 'agent-svid.pem';
export const KEY_FILE = 'agent-key.pem';
export const BUNDLE_FILE = 'bundle.json';
export const META_FILE = 'agent.json';
/** Locked (flock) by the running agent; names its pid. */
export const LOCK_FILE = 'agent.lock';

/** Another process (another sigil-agent) holds the data dir's lock. */
export class DataDirInUseError extends Error {
  override readonly name = 'DataDirInUseError';

  constructor(
    readonly dataDir: string,
    readonly holderPid: number | undefined,
  ) {
    super(
      `data dir ${dataDir} is in use by another sigil-agent` +
        `${holderPid === undefined ? '' : ` (pid ${holderPid})`}: one agent per data dir; stop the other one, or ` +
        'give this one its own --data-dir',
    );
  }
}

interface Meta {
  spiffe_id: string;
  attestation_method: AttestationMethod;
  // Named when join tokens were the only single-use credential; kept so that existing data dirs resume.
  join_token_sha256?: string;
}

function errorCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

/**
 * The agent's data dir: its SVID chain (`agent-svid.pem`), private key (`agent-key.pem`, PKCS#8), trust bundle
 * (`bundle.json`, SPIFFE JWKS with its sequence) and attestation facts (`agent.json`), each a 0600 file in a 0700
 * dir. A save writes and flushes every new file before it replaces any, so a failed write (a full disk) keeps the old
 * state whole; the renames put the key before the SVID, so a crash between the two leaves a pair that fails the key
 * check of {@link decideResume} and the agent attests again, rather than a half-written file.
 */
export class AgentStorage {
  private lock: FileLock | undefined;

  constructor(readonly dataDir: string) {}

  /**
   * Creates the data dir (0700) if needed and takes its lock (`agent.lock`, an exclusive flock held until
   * {@link release} or the process's end): two agents on one data dir would overwrite each other's identity.
   *
   * @throws DataDirInUseError when another process holds the lock.
   */
  async prepare(): Promise<void> {
    await ensurePrivateDir(this.dataDir);
    if (this.lock !== undefined) return;
    try {
      this.lock = FileLock.acquire(this.path(LOCK_FILE));
    } catch (error) {
      if (error instanceof FileLockHeldError) throw new DataDirInUseError(this.dataDir, error.holderPid);
      throw error;
    }
  }

  /** Drops the data dir's lock (at stop); safe to call twice. */
  release(): void {
    this.lock?.release();
    this.lock = undefined;
  }

  /**
   * Persists a new agent identity (attestation or renewal). Every file is written and flushed before any is replaced
   * ({@link writeFilesAtomic}), so a write that fails (a full disk) leaves the stored state as it was.
   *
   * @throws Error naming the data dir and the cause (`ENOSPC`: no space left) when it cannot be written.
   */
  async save(state: AgentState, spiffeId: SpiffeId): Promise<void> {
    const meta: Meta = {
      spiffe_id: spiffeId.toString(),
      attestation_method: state.attestationMethod,
      ...(state.usedCredentialSha256 !== undefined && { join_token_sha256: state.usedCredentialSha256 }),
    };
    await this.write([
      { path: this.path(META_FILE), data: `${JSON.stringify(meta, null, 2)}\n` },
      { path: this.path(KEY_FILE), data: toPem(PEM_LABEL.privateKey, state.privateKeyPkcs8) },
      { path: this.path(SVID_FILE), data: certificatesToPem([...state.svidChain]) },
      this.bundleFile(state.bundle),
    ]);
  }

  /** Persists a newer bundle of our trust domain (throws as {@link save} does). */
  async saveBundle(bundle: TrustBundle): Promise<void> {
    await this.write([this.bundleFile(bundle)]);
  }

  private bundleFile(bundle: TrustBundle): AtomicFile {
    return { path: this.path(BUNDLE_FILE), data: `${JSON.stringify(bundle.toJwks(), null, 2)}\n` };
  }

  private async write(files: readonly AtomicFile[]): Promise<void> {
    try {
      await ensurePrivateDir(this.dataDir);
      await writeFilesAtomic(files);
    } catch (error) {
      const code = errorCode(error);
      const cause = code === 'ENOSPC' ? 'no space left on device (ENOSPC)' : (code ?? (error as Error).message);
      throw new Error(`cannot write the agent state to ${this.dataDir}: ${cause}; the stored state is unchanged`, {
        cause: error,
      });
    }
  }

  /**
   * Reads the stored state. Undefined when the agent never attested (no SVID file); throws, naming the file, when
   * a file exists but cannot be read or parsed.
   */
  async load(trustDomain: TrustDomain | undefined): Promise<AgentState | undefined> {
    const svidPem = await this.read(SVID_FILE);
    if (svidPem === undefined) return undefined;
    const keyPem = await this.read(KEY_FILE);
    const bundleJson = await this.read(BUNDLE_FILE);
    const metaJson = await this.read(META_FILE);
    if (keyPem === undefined || bundleJson === undefined || metaJson === undefined) {
      throw new Error(
        `data dir ${this.dataDir}: ${SVID_FILE} exists but ${KEY_FILE}, ${BUNDLE_FILE} or ${META_FILE} is missing`,
      );
    }
    const svidChain = this.parse(SVID_FILE, () => pemBlocks(svidPem).map((block) => block.der));
    const keys = this.parse(KEY_FILE, () => pemBlocks(keyPem).filter((block) => block.label === PEM_LABEL.privateKey));
    if (keys.length !== 1) throw new Error(`${this.path(KEY_FILE)}: must hold exactly one PRIVATE KEY block`);
    const meta = this.parse(META_FILE, () => JSON.parse(metaJson) as Meta);
    const spiffeId = this.parse(META_FILE, () => SpiffeId.parse(meta.spiffe_id));
    if (typeof meta.attestation_method !== 'string' || !ATTESTOR_TYPE.test(meta.attestation_method)) {
      throw new Error(`${this.path(META_FILE)}: attestation_method must be a node attestor type (a-z, 0-9 and _)`);
    }
    const bundle = this.parse(BUNDLE_FILE, () =>
      TrustBundle.parseJwks(trustDomain ?? spiffeId.trustDomain, bundleJson),
    );
    return {
      svidChain,
      privateKeyPkcs8: (keys[0] as { der: Uint8Array }).der,
      bundle,
      attestationMethod: meta.attestation_method,
      ...(meta.join_token_sha256 !== undefined && { usedCredentialSha256: meta.join_token_sha256 }),
    };
  }

  /**
   * Removes the temporary files a save left when the agent was killed in the middle of it (they may hold a private
   * key). Call once at start, before any save of this process: a save in progress has its own temporary files.
   */
  async removeStaleTemporaries(): Promise<string[]> {
    const names = [SVID_FILE, KEY_FILE, BUNDLE_FILE, META_FILE].map((name) => name.replaceAll('.', '\\.'));
    const stale = new RegExp(`^\\.(?:${names.join('|')})\\.\\d+\\.[0-9a-f]{12}\\.tmp$`);
    const removed = (await readdir(this.dataDir)).filter((name) => stale.test(name));
    for (const name of removed) await rm(this.path(name), { force: true });
    return removed;
  }

  /** Removes the stored identity (not the bundle): the agent must attest again. */
  async forgetSvid(): Promise<void> {
    await rm(this.path(SVID_FILE), { force: true });
    await rm(this.path(KEY_FILE), { force: true });
  }

  private path(name: string): string {
    return join(this.dataDir, name);
  }

  private async read(name: string): Promise<string | undefined> {
    try {
      return await readFile(this.path(name), 'utf8');
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return undefined;
      throw new Error(`${this.path(name)}: cannot read: ${errorCode(error) ?? (error as Error).message}`);
    }
  }

  private parse<T>(name: string, parse: () => T): T {
    try {
      return parse();
    } catch (error) {
      throw new Error(`${this.path(name)}: ${(error as Error).message}`);
    }
  }
}

/**
 * Whether the agent may resume with its stored identity instead of attesting (README, sigil-agent): the SVID must be
 * valid at `now`, chain to the stored bundle, belong to the configured trust domain, and match the stored key.
 */
export async function decideResume(
  state: AgentState | undefined,
  options: { now: Date; trustDomain: TrustDomain | undefined },
): Promise<ResumeDecision> {
  if (state === undefined) return { resume: false, reason: 'no stored agent SVID' };
  let svid;
  let expiresAt: Date;
  try {
    svid = await parseX509Svid([...state.svidChain], state.privateKeyPkcs8);
    // The leaf's validity read from its DER: the parsed certificate objects would load @peculiar/x509 for nothing.
    expiresAt = certificateSummary(state.svidChain[0] as Uint8Array).notAfter;
  } catch (error) {
    return { resume: false, reason: `stored agent SVID is unusable: ${(error as Error).message}` };
  }
  if (options.trustDomain !== undefined && !svid.spiffeId.trustDomain.equals(options.trustDomain)) {
    return {
      resume: false,
      reason: `stored agent SVID is of trust domain ${svid.spiffeId.trustDomain.name}, not the configured ${options.trustDomain.name}`,
    };
  }
  if (expiresAt.getTime() <= options.now.getTime()) {
    return { resume: false, reason: `stored agent SVID expired at ${expiresAt.toISOString()}` };
  }
  try {
    await verifyX509Svid([...state.svidChain], state.bundle, { now: options.now });
  } catch (error) {
    return {
      resume: false,
      reason: `stored agent SVID does not verify against the stored bundle: ${(error as Error).message}`,
    };
  }
  return { resume: true, state, spiffeId: svid.spiffeId, expiresAt };
}
