import { readlinkSync, statSync } from 'node:fs';
import { readlink } from 'node:fs/promises';
import { ContextLogger } from '@sigil/logging';
import { type Selector } from '@sigil/runtime';
import { type WorkloadAttestorContext, type WorkloadAttestorPlugin } from '../registry.js';
import { WorkloadAttestationError, type WorkloadAttestor, type WorkloadCaller } from '../workload-attestor.js';
import { AccountNames } from './account-names.js';
import { ExecutableDigests, unixSha256Selector } from './executable-digest.js';
import { defaultProcRoot, procPath, readStartTime, readStatus } from './proc.js';

export interface UnixAttestorOptions {
  readonly accountNames?: AccountNames;
  readonly digests?: ExecutableDigests;
  /**
   * Whether any entry the agent holds uses a `unix:sha256` selector (default: always). When none does, executables
   * are not hashed at all: the selector could not make an entry match.
   */
  readonly needsDigest?: () => boolean;
  readonly logger?: Pick<ContextLogger, 'debug' | 'warn'>;
  /** Where procfs is mounted (default `HOST_PROC` or `/proc`). */
  readonly procRoot?: string;
}

const NOT_PERMITTED = new Set(['EACCES', 'EPERM']);

function errorCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

function unix(value: string): Selector {
  return { type: 'unix', value };
}

/**
 * The unix workload attestor: selectors of a local process from procfs, following SPIRE's unix plugin.
 *
 * - `unix:uid:N` and `unix:gid:N` are the *effective* ids (SPIRE takes the second of /proc's real, effective,
 *   saved, fs ids), which is also what SO_PEERCRED reports; `unix:user:NAME` / `unix:group:NAME` when NSS
 *   (`getpwuid_r`/`getgrgid_r`: files, LDAP, sssd, …) names them.
 * - `unix:supplementary_gid:N` for each id on `Groups:`, and `unix:supplementary_group:NAME` when named.
 * - `unix:path:/abs/exe` (the target of `/proc/<pid>/exe`) and `unix:sha256:HEX` of that executable. SPIRE emits
 *   these only with `discover_workload_path` and then fails attestation when they cannot be read; we always try,
 *   and omit both when the agent is not permitted to read another user's `/proc/<pid>/exe` (EACCES/EPERM). Omitting
 *   selectors can only make fewer entries match, never more, so this degrades safely: entries that pin a path or
 *   digest need an agent with the privilege to read them, as in SPIRE. A file over the size limit gets no
 *   `unix:sha256` (with a warning).
 *
 * A pid that exits or is reused must not lend another process's identity, and neither may a setuid/setgid exec:
 * - the process pinned when the connection was accepted must still be alive after every read of `/proc/<pid>`, so
 *   what was read belonged to it (a pidfd stays bound to its process when the pid is reused), and its start time
 *   must still be the one read at connect time;
 * - its effective uid *and* gid must still be the ones the kernel reported for the connection (a setgid exec in a
 *   process that keeps the connection changes the gid, not the pid, start time or uid);
 * - the files of `/proc/<pid>` must be owned by those same ids: the kernel gives them to root when a process turns
 *   non-dumpable (a setuid/setgid exec, or `prctl(PR_SET_DUMPABLE, 0)`), and such a caller is refused, as SPIRE
 *   does.
 */
export class UnixWorkloadAttestor implements WorkloadAttestor {
  readonly type = 'unix';

  private readonly accountNames: AccountNames;
  private readonly digests: ExecutableDigests;
  private readonly needsDigest: () => boolean;
  private readonly logger: Pick<ContextLogger, 'debug' | 'warn'>;
  private readonly procRoot: string;

  constructor(options: UnixAttestorOptions = {}) {
    this.procRoot = options.procRoot ?? defaultProcRoot();
    this.accountNames = options.accountNames ?? new AccountNames();
    this.digests = options.digests ?? new ExecutableDigests();
    this.needsDigest = options.needsDigest ?? (() => true);
    this.logger = options.logger ?? new ContextLogger(UnixWorkloadAttestor.name);
  }

  /**
   * Checks that the procfs read (`HOST_PROC` or `/proc`) belongs to the agent's own pid namespace: SO_PEERCRED pids
   * and pidfds are the agent's, so a procfs of another namespace would attest whatever process has the same number
   * there.
   */
  async prepare(): Promise<void> {
    await this.checkProcRoot();
  }

  /** See {@link prepare}. */
  async checkProcRoot(): Promise<void> {
    const self = await readlink(`${this.procRoot}/self`).catch((error: unknown) => {
      throw new WorkloadAttestationError(`procfs ${this.procRoot}: cannot read ${this.procRoot}/self`, {
        cause: error,
      });
    });
    if (self !== String(process.pid)) {
      throw new WorkloadAttestationError(
        `procfs ${this.procRoot}: it names this agent pid ${self}, not ${process.pid}: it belongs to another pid ` +
          'namespace (run the agent in the pid namespace of the processes it attests, e.g. hostPID)',
      );
    }
  }

  /** Selectors of the process; rejects with {@link WorkloadAttestationError} when it cannot be pinned down. */
  async attest(caller: WorkloadCaller, signal?: AbortSignal): Promise<Selector[]> {
    const { pid } = caller;
    if (!Number.isSafeInteger(pid) || pid <= 0) {
      throw new WorkloadAttestationError(`pid: must be a positive integer, got ${pid}`);
    }
    this.checkAlive(caller, 'since it connected');
    if ((await this.startTime(pid)) !== caller.startTime) {
      throw new WorkloadAttestationError(`process ${pid}: pid was reused since the connection was accepted`);
    }
    const selectors = await this.selectors(caller, signal);
    if ((await this.startTime(pid)) !== caller.startTime) {
      throw new WorkloadAttestationError(`process ${pid}: pid was reused during attestation`);
    }
    // Last: everything above was read from the pinned process only if it is still alive now.
    this.checkAlive(caller, 'during attestation');
    return selectors;
  }

  private checkAlive(caller: WorkloadCaller, when: string): void {
    if (!caller.process.isAlive()) {
      throw new WorkloadAttestationError(`process ${caller.pid}: the process that connected has exited ${when}`);
    }
  }

  private async startTime(pid: number): Promise<bigint> {
    try {
      return await readStartTime(pid, this.procRoot);
    } catch (error) {
      throw new WorkloadAttestationError(`process ${pid}: cannot read its start time (exited?)`, { cause: error });
    }
  }

  private async selectors(caller: WorkloadCaller, signal: AbortSignal | undefined): Promise<Selector[]> {
    const { pid } = caller;
    const status = await readStatus(pid, this.procRoot).catch((error: unknown) => {
      throw new WorkloadAttestationError(`process ${pid}: cannot read its status (exited?)`, { cause: error });
    });
    const uid = status.uids[1];
    const gid = status.gids[1];
    if (uid !== caller.uid) {
      throw new WorkloadAttestationError(
        `process ${pid}: effective uid ${uid} differs from the connection's peer uid ${caller.uid}`,
      );
    }
    if (gid !== caller.gid) {
      throw new WorkloadAttestationError(
        `process ${pid}: effective gid ${gid} differs from the connection's peer gid ${caller.gid}`,
      );
    }
    this.checkDumpable(caller);
    const selectors: Selector[] = [unix(`uid:${uid}`)];
    const user = await this.accountNames.userName(uid);
    if (user !== undefined) selectors.push(unix(`user:${user}`));
    selectors.push(unix(`gid:${gid}`));
    const group = await this.accountNames.groupName(gid);
    if (group !== undefined) selectors.push(unix(`group:${group}`));
    for (const supplementary of status.groups) {
      selectors.push(unix(`supplementary_gid:${supplementary}`));
      const name = await this.accountNames.groupName(supplementary);
      if (name !== undefined) selectors.push(unix(`supplementary_group:${name}`));
    }
    selectors.push(...(await this.executableSelectors(pid, uid, signal)));
    return selectors;
  }

  private checkDumpable(caller: WorkloadCaller): void {
    const { pid } = caller;
    // The kernel hands the files under /proc/<pid> (not the directory itself) to root while the process is not
    // dumpable; otherwise they belong to its effective uid and gid.
    const path = procPath(pid, 'status', this.procRoot);
    // Synchronous, like the procfs reads (proc.ts, readProcFile): the kernel answers from the task's credentials
    // without waiting on the process, and a thread-pool round trip per call cost more than the stat itself.
    let owner: { uid: number; gid: number };
    try {
      owner = statSync(path);
    } catch (error) {
      throw new WorkloadAttestationError(`process ${pid}: cannot stat ${path} (exited?)`, { cause: error });
    }
    if (owner.uid !== caller.uid || owner.gid !== caller.gid) {
      throw new WorkloadAttestationError(
        `process ${pid}: ${path} is owned by ${owner.uid}:${owner.gid}, not by the caller's ` +
          `${caller.uid}:${caller.gid}: the process is not dumpable (a setuid/setgid exec), so it is refused`,
      );
    }
  }

  private async executableSelectors(pid: number, uid: number, signal: AbortSignal | undefined): Promise<Selector[]> {
    const exe = procPath(pid, 'exe', this.procRoot);
    let path: string;
    try {
      // Synchronous for the same reason as the stat above: procfs resolves the link from the task's mm, no I/O.
      path = readlinkSync(exe);
    } catch (error) {
      if (!NOT_PERMITTED.has(errorCode(error) ?? '')) {
        throw new WorkloadAttestationError(`process ${pid}: cannot read its executable path`, { cause: error });
      }
      this.logger.debug(`process ${pid}: ${exe} is not readable by the agent: no unix:path or unix:sha256 selector`);
      return [];
    }
    const selectors = [unix(`path:${path}`)];
    if (!this.needsDigest()) return selectors;
    // Hashing is the one step that may wait (on the hashing queue): not for a call that is already over.
    signal?.throwIfAborted();
    try {
      // Charged to the caller's uid: one user's `touch` loop must not spend the hashing budget of the others.
      const sha256 = await this.digests.sha256(exe, uid);
      if (sha256 !== undefined) selectors.push(unixSha256Selector(sha256));
    } catch (error) {
      if (!NOT_PERMITTED.has(errorCode(error) ?? '')) {
        throw new WorkloadAttestationError(`process ${pid}: cannot hash its executable`, { cause: error });
      }
      this.logger.debug(`process ${pid}: ${exe} cannot be opened by the agent: no unix:sha256 selector`);
    }
    return selectors;
  }
}

/** The registry's factory: the unix attestor with the agent's `unix:sha256` limits, hashing only when an entry needs it. */
export function createUnixAttestor(context: WorkloadAttestorContext): UnixWorkloadAttestor {
  const digests = new ExecutableDigests({
    sizeLimitBytes: context.config.unixSha256.maxExecutableBytes,
    uidQuotaBytesPerMinute: context.config.unixSha256.quotaBytesPerUidPerMinute,
    clock: context.clock,
  });
  return new UnixWorkloadAttestor({ digests, needsDigest: () => context.cache.usesUnixSha256() });
}

/** The registry's entry: `unix` takes no options (its limits are the agent's `unix_sha256_*` keys). */
export const UNIX_ATTESTOR: WorkloadAttestorPlugin = Object.freeze({ optionNames: [], create: createUnixAttestor });
