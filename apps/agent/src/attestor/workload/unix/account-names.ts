import { readFile } from 'node:fs/promises';

/** Where the account databases are read from; tests point these at their own files. */
export interface AccountNamesOptions {
  readonly passwdPath?: string;
  readonly groupPath?: string;
  /** How long a read of the files is reused, in milliseconds (default 10 s). */
  readonly ttlMs?: number;
  /** Milliseconds since the epoch; injected so tests control expiry. */
  readonly now?: () => number;
}

interface Snapshot {
  readonly readAt: number;
  readonly names: Promise<ReadonlyMap<number, string>>;
}

/**
 * Parses `/etc/passwd` or `/etc/group` (`name:password:id:...`) into id → name. When an id appears on several
 * lines the first wins, as `getpwuid(3)`/`getgrgid(3)` answer with the files backend.
 */
export function parseAccountFile(text: string): Map<number, string> {
  const names = new Map<number, string>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const [name, , id] = line.split(':');
    if (name === undefined || name === '' || id === undefined || !/^\d+$/.test(id)) continue;
    const numericId = Number(id);
    if (!names.has(numericId)) names.set(numericId, name);
  }
  return names;
}

/**
 * User and group names by numeric id, for the `unix:user` and `unix:group` selectors. The files are read at most
 * once per TTL (workloads call often; accounts change rarely) and a missing file or id simply yields no name, as
 * SPIRE's attestor omits the selector when the lookup fails. Only the files databases are consulted (no NSS
 * modules such as LDAP or sssd).
 */
export class AccountNames {
  private readonly passwdPath: string;
  private readonly groupPath: string;
  private readonly ttlMs: number;
  private readonly now: () => number;
  private readonly snapshots = new Map<string, Snapshot>();

  constructor(options: AccountNamesOptions = {}) {
    this.passwdPath = options.passwdPath ?? '/etc/passwd';
    this.groupPath = options.groupPath ?? '/etc/group';
    this.ttlMs = options.ttlMs ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /** The user name of `uid`, or undefined when `/etc/passwd` has none. */
  async userName(uid: number): Promise<string | undefined> {
    return (await this.read(this.passwdPath)).get(uid);
  }

  /** The group name of `gid`, or undefined when `/etc/group` has none. */
  async groupName(gid: number): Promise<string | undefined> {
    return (await this.read(this.groupPath)).get(gid);
  }

  private read(path: string): Promise<ReadonlyMap<number, string>> {
    const now = this.now();
    const cached = this.snapshots.get(path);
    if (cached !== undefined && now - cached.readAt < this.ttlMs) return cached.names;
    const names = readFile(path, 'utf8').then(parseAccountFile, () => new Map<number, string>());
    this.snapshots.set(path, { readAt: now, names });
    return names;
  }
}
