import koffi from 'koffi';

/** Tuning of the account lookups; tests shrink the buffers to exercise the ERANGE retry. */
export interface AccountNamesOptions {
  /** How long an answer (a name, or "no such id") is reused, in milliseconds (default 10 s). */
  readonly ttlMs?: number;
  /** Milliseconds since the epoch; injected so tests control expiry. */
  readonly now?: () => number;
  /** First buffer handed to `getpwuid_r`/`getgrgid_r` (default 1 KiB); doubled on each ERANGE. */
  readonly initialBufferBytes?: number;
  /**
   * Largest buffer tried (default 1 MiB): a group with tens of thousands of members needs more, and is then reported
   * as unnamed rather than growing the agent's memory without bound.
   */
  readonly maxBufferBytes?: number;
}

/** What a lookup found: the name, none (no such id, or the buffer bound was reached), or a failure of NSS. */
type Lookup = { readonly name: string | undefined } | { readonly errno: number };

type LookupCallback = (error: unknown, result: number) => void;
interface AsyncFunction {
  async(...args: unknown[]): void;
}
interface Native {
  readonly getpwuid: AsyncFunction;
  readonly getgrgid: AsyncFunction;
}

const ERANGE = 34;
/** getpwuid_r(3): "0 or ENOENT or ESRCH or EBADF or EPERM or ..." mean the id was not found. */
const NOT_FOUND = new Set([0, 1, 2, 3, 9]);
const DEFAULT_INITIAL_BUFFER_BYTES = 1024;
const DEFAULT_MAX_BUFFER_BYTES = 1024 * 1024;

let native: Native | undefined;

function load(): Native {
  if (native !== undefined) return native;
  if (process.platform !== 'linux') {
    throw new Error(`account names: getpwuid_r/getgrgid_r are only used on linux, not ${process.platform}`);
  }
  // The process's own symbol table already holds libc (glibc or musl), and with it NSS (files, LDAP, sssd, …).
  // Only the name (the first field of both structs) is read; the rest is declared to give the structs their size.
  const libc = koffi.load(null);
  koffi.struct('sigil_passwd', {
    pw_name: 'const char *',
    pw_passwd: 'void *',
    pw_uid: 'uint32_t',
    pw_gid: 'uint32_t',
    pw_gecos: 'void *',
    pw_dir: 'void *',
    pw_shell: 'void *',
  });
  koffi.struct('sigil_group', { gr_name: 'const char *', gr_passwd: 'void *', gr_gid: 'uint32_t', gr_mem: 'void *' });
  native = {
    getpwuid: libc.func(
      'int getpwuid_r(uint32_t uid, _Out_ sigil_passwd *pwd, uint8_t *buf, size_t buflen, _Out_ void **result)',
    ) as unknown as AsyncFunction,
    getgrgid: libc.func(
      'int getgrgid_r(uint32_t gid, _Out_ sigil_group *grp, uint8_t *buf, size_t buflen, _Out_ void **result)',
    ) as unknown as AsyncFunction,
  };
  return native;
}

/**
 * One `getpwuid_r`/`getgrgid_r` call on koffi's worker thread (NSS may ask a directory server: the event loop must
 * not wait on it).
 */
function callAsync(fn: AsyncFunction, id: number, bytes: number): Promise<{ errno: number; name?: string }> {
  const entry: Record<string, unknown> = {};
  const buffer = Buffer.alloc(bytes);
  const result: [unknown] = [null];
  return new Promise((resolve, reject) => {
    fn.async(id, entry, buffer, bytes, result, ((error, errno) => {
      if (error) return reject(error instanceof Error ? error : new Error(String(error)));
      const name = entry['pw_name'] ?? entry['gr_name'];
      // result is NULL when there is no such id (errno 0) or on an error; only then is the struct unset.
      resolve(
        result[0] !== null && typeof name === 'string' ? { errno, name } : { errno: NOT_FOUND.has(errno) ? 0 : errno },
      );
    }) satisfies LookupCallback);
  });
}

/**
 * User and group names by numeric id, for the `unix:user` and `unix:group` selectors, through the C library's
 * `getpwuid_r(3)`/`getgrgid_r(3)`: every NSS source configured in `/etc/nsswitch.conf` answers (files, LDAP, sssd,
 * systemd-userdb), as Go's `os/user` with cgo does for SPIRE. An answer is reused for a TTL (workloads call often;
 * accounts change rarely); a failure of NSS (a directory server down) is not kept, and yields no name now, as SPIRE's
 * attestor omits the selector when the lookup fails. Omitting a name only makes fewer entries match.
 */
export class AccountNames {
  private readonly ttlMs: number;
  private readonly now: () => number;
  private readonly initialBufferBytes: number;
  private readonly maxBufferBytes: number;
  private readonly answers = new Map<string, { readonly atMs: number; readonly name: Promise<string | undefined> }>();

  constructor(options: AccountNamesOptions = {}) {
    this.ttlMs = options.ttlMs ?? 10_000;
    this.now = options.now ?? Date.now;
    this.initialBufferBytes = options.initialBufferBytes ?? DEFAULT_INITIAL_BUFFER_BYTES;
    this.maxBufferBytes = options.maxBufferBytes ?? DEFAULT_MAX_BUFFER_BYTES;
  }

  /** The user name of `uid`, or undefined when no NSS source names it. */
  userName(uid: number): Promise<string | undefined> {
    return this.cached(`u${uid}`, () => this.lookup(load().getpwuid, uid));
  }

  /** The group name of `gid`, or undefined when no NSS source names it. */
  groupName(gid: number): Promise<string | undefined> {
    return this.cached(`g${gid}`, () => this.lookup(load().getgrgid, gid));
  }

  private cached(key: string, lookup: () => Promise<Lookup>): Promise<string | undefined> {
    const now = this.now();
    const kept = this.answers.get(key);
    if (kept !== undefined && now - kept.atMs < this.ttlMs) return kept.name;
    // Concurrent callers share one lookup; a failed one is dropped so the next caller asks again.
    const name = lookup().then(
      (found) => {
        if ('errno' in found) {
          this.answers.delete(key);
          return undefined;
        }
        return found.name;
      },
      () => {
        this.answers.delete(key);
        return undefined;
      },
    );
    this.answers.set(key, { atMs: now, name });
    // Ids come from the kernel (a bounded set on a host), yet drop old answers so the map cannot only grow.
    if (this.answers.size > 4096) {
      for (const [old, answer] of this.answers) if (now - answer.atMs >= this.ttlMs) this.answers.delete(old);
    }
    return name;
  }

  private async lookup(fn: AsyncFunction, id: number): Promise<Lookup> {
    if (!Number.isInteger(id) || id < 0 || id > 0xffff_ffff) return { name: undefined };
    // ERANGE: the entry does not fit the buffer (a group with many members); try again with twice the room.
    for (let bytes = this.initialBufferBytes; bytes <= this.maxBufferBytes; bytes *= 2) {
      const { errno, name } = await callAsync(fn, id, bytes);
      if (errno === ERANGE) continue;
      if (errno !== 0) return { errno };
      return { name };
    }
    return { name: undefined };
  }
}
