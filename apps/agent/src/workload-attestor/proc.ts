import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';

/** What `/proc/<pid>/status` says about a process's credentials. */
export interface ProcessStatus {
  /** Real, effective, saved set and filesystem user ids, in the kernel's order. */
  readonly uids: readonly [number, number, number, number];
  /** Real, effective, saved set and filesystem group ids, in the kernel's order. */
  readonly gids: readonly [number, number, number, number];
  /** Supplementary group ids (`Groups:`), possibly empty. */
  readonly groups: readonly number[];
}

/** Root of procfs; `HOST_PROC` lets an agent in a container read the host's, as SPIRE's unix attestor allows. */
export function defaultProcRoot(): string {
  return process.env['HOST_PROC'] ?? '/proc';
}

/** `<root>/<pid>/<file>`. */
export function procPath(pid: number, file: string, root: string = defaultProcRoot()): string {
  return `${root}/${pid}/${file}`;
}

// procfs files report a size of 0, for which readFile reads in 64 KiB buffers (two per file: the text, then the
// end), 384 KiB of garbage per attestation: 256 attestations at once left about 100 MiB for the garbage collector.
// Their text is far smaller, so they are read through one small buffer.
const PROC_READ_BYTES = 4096;

/** The text of a procfs file, read in {@link PROC_READ_BYTES} chunks until its end. */
export async function readProcFile(path: string): Promise<string> {
  const file = await open(path, 'r');
  try {
    const buffer = Buffer.allocUnsafe(PROC_READ_BYTES);
    const chunks: Buffer[] = [];
    for (;;) {
      const { bytesRead } = await file.read(buffer, 0, PROC_READ_BYTES, null);
      if (bytesRead === 0) break;
      chunks.push(Buffer.from(buffer.subarray(0, bytesRead)));
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    await file.close();
  }
}

/**
 * Parses the start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot). Together with the pid it names
 * one process for the life of the system, which is what lets us notice a pid that was reused.
 */
export function parseStartTime(stat: string): bigint {
  // Field 2 (comm) is in parentheses and may itself contain spaces and ')', so count from the last ')'.
  const close = stat.lastIndexOf(')');
  const fields = close < 0 ? [] : stat.slice(close + 2).split(' ');
  // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
  const startTime = fields[19];
  if (startTime === undefined || !/^\d+$/.test(startTime)) {
    throw new Error('stat: field 22 (starttime) is missing or not a number');
  }
  return BigInt(startTime);
}

/** Start time of `pid` (see {@link parseStartTime}); rejects when the process does not exist. */
export async function readStartTime(pid: number, root?: string): Promise<bigint> {
  return parseStartTime(await readProcFile(procPath(pid, 'stat', root)));
}

/** Synchronous {@link readStartTime}, for the connection handler that must pin the pid as early as possible. */
export function readStartTimeSync(pid: number, root?: string): bigint {
  return parseStartTime(readFileSync(procPath(pid, 'stat', root), 'utf8'));
}

function parseIdQuad(line: string | undefined, key: string): [number, number, number, number] {
  const ids = (line ?? '').split(/\s+/).filter((s) => s !== '');
  if (ids.length !== 4 || !ids.every((id) => /^\d+$/.test(id))) {
    throw new Error(`status: ${key} must list 4 numeric ids, got ${JSON.stringify(line ?? null)}`);
  }
  return [Number(ids[0]), Number(ids[1]), Number(ids[2]), Number(ids[3])];
}

/** Parses the `Uid:`, `Gid:` and `Groups:` lines of `/proc/<pid>/status`. */
export function parseStatus(status: string): ProcessStatus {
  const lines = new Map<string, string>();
  for (const line of status.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) lines.set(line.slice(0, colon), line.slice(colon + 1));
  }
  const groups = (lines.get('Groups') ?? '').split(/\s+/).filter((s) => s !== '');
  if (!groups.every((gid) => /^\d+$/.test(gid))) {
    throw new Error(`status: Groups must list numeric ids, got ${JSON.stringify(lines.get('Groups'))}`);
  }
  return {
    uids: parseIdQuad(lines.get('Uid'), 'Uid'),
    gids: parseIdQuad(lines.get('Gid'), 'Gid'),
    groups: groups.map(Number),
  };
}

/** Credentials of `pid` from `/proc/<pid>/status`; rejects when the process does not exist. */
export async function readStatus(pid: number, root?: string): Promise<ProcessStatus> {
  return parseStatus(await readProcFile(procPath(pid, 'status', root)));
}
