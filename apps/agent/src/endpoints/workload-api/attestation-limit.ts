import { type Selector } from '@sigil/runtime';
import { type CallerAttestor } from './workload-api.handler.js';
import { type PeerCredentials } from '../peer-credentials.js';

interface UidTurns {
  running: number;
  readonly waiting: Array<() => void>;
}

/**
 * Attests at most `maxPerUid` callers of one uid at a time; the others of that uid wait their turn, in order.
 * Attestation reads several procfs files through libuv's small thread pool: one uid's 256 calls at once would
 * queue every other caller's reads behind theirs (and hold their buffers all at once). The waiting calls are open
 * calls, so their number is bounded by the Workload API's open calls per uid.
 */
export class PerUidAttestationLimit implements CallerAttestor {
  private readonly uids = new Map<number, UidTurns>();

  constructor(
    private readonly attestor: CallerAttestor,
    private readonly maxPerUid: number,
  ) {
    if (!Number.isSafeInteger(maxPerUid) || maxPerUid < 1) {
      throw new Error(`maxAttestationsPerUid: must be a positive integer, got ${maxPerUid}`);
    }
  }

  /** A call aborted (`signal`: the client cancelled it) while it waits leaves the queue and rejects. */
  async attest(caller: PeerCredentials, signal?: AbortSignal): Promise<readonly Selector[]> {
    await this.turn(caller.uid, signal);
    try {
      return await this.attestor.attest(caller, signal);
    } finally {
      this.done(caller.uid);
    }
  }

  /** How many attestations of `uid` are running and waiting (for tests). */
  load(uid: number): { running: number; waiting: number } {
    const turns = this.uids.get(uid);
    return { running: turns?.running ?? 0, waiting: turns?.waiting.length ?? 0 };
  }

  private turn(uid: number, signal: AbortSignal | undefined): Promise<void> {
    signal?.throwIfAborted();
    let turns = this.uids.get(uid);
    if (turns === undefined) {
      turns = { running: 0, waiting: [] };
      this.uids.set(uid, turns);
    }
    if (turns.running < this.maxPerUid) {
      turns.running++;
      return Promise.resolve();
    }
    const waiting = turns;
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const index = waiting.waiting.indexOf(take);
        if (index !== -1) waiting.waiting.splice(index, 1);
        if (waiting.running === 0 && waiting.waiting.length === 0) this.uids.delete(uid);
        reject(signal!.reason as Error);
      };
      const take = (): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      waiting.waiting.push(take);
    });
  }

  private done(uid: number): void {
    const turns = this.uids.get(uid);
    if (turns === undefined) return;
    const next = turns.waiting.shift();
    // The finished call's slot passes straight to the next waiting one.
    if (next !== undefined) next();
    else if (--turns.running === 0) this.uids.delete(uid);
  }
}
