import { describe, expect, it } from 'vitest';
import { type Selector } from '@sigil/runtime';
import { PerUidAttestationLimit } from './attestation-limit.js';
import { type PeerCredentials } from '../peer-credentials.js';

/** An attestor whose attestations end when the test says so, recording which caller started when. */
class HeldAttestor {
  readonly started: number[] = [];
  private readonly pending: Array<{ pid: number; end: (fail?: boolean) => void }> = [];

  attest(caller: PeerCredentials): Promise<readonly Selector[]> {
    this.started.push(caller.pid);
    return new Promise((resolve, reject) => {
      this.pending.push({
        pid: caller.pid,
        end: (fail) => (fail ? reject(new Error('exited')) : resolve([{ type: 'unix', value: `uid:${caller.uid}` }])),
      });
    });
  }

  end(pid: number, fail = false): void {
    const index = this.pending.findIndex((each) => each.pid === pid);
    this.pending.splice(index, 1)[0]!.end(fail);
  }
}

const caller = (pid: number, uid: number): PeerCredentials => ({ pid, uid, gid: uid }) as unknown as PeerCredentials;
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('PerUidAttestationLimit', () => {
  it('attests at most N callers of one uid at once, in order, while another uid goes straight through', async () => {
    const inner = new HeldAttestor();
    const limit = new PerUidAttestationLimit(inner, 2);
    const results = [1, 2, 3, 4, 5].map((pid) => limit.attest(caller(pid, 1000)));
    await settle();
    expect(inner.started).toEqual([1, 2]);
    expect(limit.load(1000)).toEqual({ running: 2, waiting: 3 });
    const other = limit.attest(caller(9, 65534));
    await settle();
    expect(inner.started).toEqual([1, 2, 9]);
    inner.end(9);
    await expect(other).resolves.toEqual([{ type: 'unix', value: 'uid:65534' }]);
    // a failed attestation frees its turn too
    inner.end(2, true);
    await expect(results[1]).rejects.toThrow('exited');
    await settle();
    expect(inner.started).toEqual([1, 2, 9, 3]);
    for (const pid of [1, 3, 4, 5]) {
      await settle();
      inner.end(pid);
    }
    await Promise.all([results[0], results[2], results[3], results[4]]);
    expect(inner.started).toEqual([1, 2, 9, 3, 4, 5]);
    expect(limit.load(1000)).toEqual({ running: 0, waiting: 0 });
  });

  it('a call cancelled while it waits leaves the queue: it is never attested and takes no turn', async () => {
    const inner = new HeldAttestor();
    const limit = new PerUidAttestationLimit(inner, 1);
    const first = limit.attest(caller(1, 1000));
    const cancelled = Array.from({ length: 100 }, () => new AbortController());
    const waiting = cancelled.map((control, index) => limit.attest(caller(100 + index, 1000), control.signal));
    const last = limit.attest(caller(2, 1000));
    await settle();
    expect(limit.load(1000)).toEqual({ running: 1, waiting: 101 });
    for (const control of cancelled) control.abort(new Error('cancelled by the client'));
    for (const each of waiting) await expect(each).rejects.toThrow('cancelled by the client');
    expect(limit.load(1000)).toEqual({ running: 1, waiting: 1 });
    inner.end(1);
    await settle();
    expect(inner.started).toEqual([1, 2]);
    inner.end(2);
    await Promise.all([first, last]);
    expect(limit.load(1000)).toEqual({ running: 0, waiting: 0 });
    // Already aborted: refused at once.
    const aborted = AbortSignal.abort(new Error('gone'));
    await expect(limit.attest(caller(3, 1000), aborted)).rejects.toThrow('gone');
    expect(inner.started).toEqual([1, 2]);
  });

  it('rejects a limit below 1', () => {
    expect(() => new PerUidAttestationLimit(new HeldAttestor(), 0)).toThrow(
      'maxAttestationsPerUid: must be a positive integer, got 0',
    );
  });
});
