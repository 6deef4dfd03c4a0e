import { type ChildProcess, spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { PidFd } from './pidfd.js';

describe('PidFd', () => {
  let signaller: ChildProcess | undefined;
  const ignore = (): void => undefined;

  afterEach(() => {
    signaller?.kill();
    signaller = undefined;
    process.off('SIGUSR2', ignore);
  });

  it('tells a running process from one that has exited', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    const pidfd = PidFd.open(child.pid!);
    try {
      expect(pidfd.isAlive()).toBe(true);
      child.kill();
      await new Promise((resolve) => child.once('exit', resolve));
      expect(pidfd.isAlive()).toBe(false);
    } finally {
      pidfd.close();
    }
    expect(pidfd.isAlive()).toBe(false);
  });

  // With node --cpu-prof (SIGPROF every millisecond) poll failed with EINTR and the caller's attestation with it.
  it('answers while signals keep interrupting it (EINTR is asked again, not an error)', async () => {
    process.on('SIGUSR2', ignore);
    signaller = spawn('sh', ['-c', `while kill -USR2 ${process.pid} 2>/dev/null; do :; done`], { stdio: 'ignore' });
    await sleep(100);
    const pidfd = PidFd.open(process.pid);
    try {
      const until = Date.now() + 1000;
      let calls = 0;
      while (Date.now() < until) {
        expect(pidfd.isAlive()).toBe(true);
        calls++;
      }
      expect(calls).toBeGreaterThan(0);
    } finally {
      pidfd.close();
    }
  });
});
