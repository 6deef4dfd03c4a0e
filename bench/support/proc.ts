/** What Linux's /proc tells about a benchmark's child processes: CPU time and memory. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  ticksPerSecond ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  if (!(ticksPerSecond > 0)) throw new Error(`getconf CLK_TCK: expected a positive number, got ${ticksPerSecond}`);
  return ticksPerSecond;
}

/** User + system CPU seconds `pid` has used so far (`/proc/<pid>/stat` fields 14 and 15). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`/proc/${pid}/stat: unexpected layout`);
  return (utime + stime) / clockTicks();
}

/**
 * Resident memory of `pid` from `/proc/<pid>/status`, in KiB: now (VmRSS) and at its peak (VmHWM), and how much of
 * it now is file-backed (RssFile: mostly pages of the node binary, which every process running it shares).
 */
export interface ResidentMemory {
  readonly rssKiB: number;
  readonly peakKiB: number;
  readonly fileKiB: number;
}

export function residentMemory(pid: number): ResidentMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(status);
    if (!match) throw new Error(`/proc/${pid}/status: no ${name} line`);
    return Number(match[1]);
  };
  return { rssKiB: field('VmRSS'), peakKiB: field('VmHWM'), fileKiB: field('RssFile') };
}

/** KiB as MiB with one decimal, e.g. `87.4 MiB`. */
export const formatMiB = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;

/** Samples the resident memory of `pid` every 100 ms until stopped; `stop()` returns the largest, in KiB. */
export function sampleRss(pid: number): { stop(): number } {
  let max = residentMemory(pid).rssKiB;
  const timer = setInterval(() => {
    try {
      max = Math.max(max, residentMemory(pid).rssKiB);
    } catch {
      clearInterval(timer); // the process has exited: the bench reports that
    }
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      return max;
    },
  };
}
