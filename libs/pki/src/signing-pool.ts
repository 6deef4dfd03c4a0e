/**
 * X.509-SVID signing on every core: a fixed set of worker threads (`node:worker_threads`, inside the server's
 * process) that each run {@link signCsrs} on the chunks handed to them. The CA key reaches a worker as a KeyObject
 * by `postMessage` (a handle on the same key inside the process: it is never encoded, written or logged), with the
 * CA certificate's profile read and checked here once per key (`caProfileOf`), so that a worker loads no
 * @peculiar/x509: that alone cost a starting worker ~0.18 s of CPU (bench/README "Agent fill"). Every
 * chunk names the CA key the caller chose for it, and a worker that holds another key is sent this one first, in
 * the same ordered channel: a rotation (or a taint that moves signing to a new key) reaches the workers with the
 * first chunk signed after it, never later.
 */
import { KeyObject, type webcrypto } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { CsrSigningOutcome, CsrToSign } from './csr-signing.js';
import { messageOf } from './errors.js';
import type { SigningCaProfile } from './svid-profile.js';
import { caProfileOf } from './svid-signer.js';

/** The CA to sign a chunk with: its journal ID (any string that changes with the key), certificate and private key. */
export interface SigningCaKey {
  readonly id: string;
  readonly certificateDer: Uint8Array;
  readonly privateKey: webcrypto.CryptoKey | KeyObject;
}

/** @internal A {@link SigningCaProfile} as posted to a worker: the trust domain as its name (a class does not cross). */
export type SigningCaProfileWire = Omit<SigningCaProfile, 'trustDomain'> & { readonly trustDomain: string | undefined };

/** @internal The messages to a signing worker. */
export type ToSigningWorker =
  | {
      readonly type: 'key';
      readonly keyId: string;
      readonly profile: SigningCaProfileWire;
      readonly privateKey: KeyObject;
    }
  | {
      readonly type: 'sign';
      readonly job: number;
      readonly keyId: string;
      readonly now: number;
      readonly items: readonly CsrToSign[];
    };

/** @internal The answers of a signing worker, one per `sign` message. */
export type FromSigningWorker =
  { readonly job: number; readonly outcomes: CsrSigningOutcome[] } | { readonly job: number; readonly error: string };

/** A CA key as the pool read it: its KeyObject and its certificate's profile, or why that is no signing CA. */
interface ReadKey {
  readonly id: string;
  readonly key: KeyObject;
  readonly profile: SigningCaProfileWire | { readonly problem: string };
}

interface Pending {
  readonly size: number;
  readonly resolve: (outcomes: CsrSigningOutcome[]) => void;
  readonly reject: (error: Error) => void;
}

interface Slot {
  readonly worker: Worker;
  /** The key last sent to this worker. */
  keyId: string | undefined;
  /** CSRs sent and not answered yet (the slot with the fewest gets the next chunk). */
  load: number;
  readonly pending: Map<number, Pending>;
  stopped: boolean;
}

/**
 * The worker script: next to this module when it runs from the build (`dist/`), the built one when this module runs
 * from its TypeScript source (vitest), since a worker thread loads plain JavaScript.
 */
function workerUrl(): URL {
  const here = import.meta.url;
  return here.endsWith('.ts') ? new URL('../dist/signing-worker.js', here) : new URL('./signing-worker.js', here);
}

/** A pool of signing worker threads, started on first use; {@link close} ends them. */
export class CsrSigningPool {
  readonly #slots: (Slot | undefined)[];
  readonly #url: URL;
  #nextJob = 1;
  #closed = false;
  /**
   * The last key seen, read once per key: its KeyObject (a CryptoKey cannot be used by `crypto.sign` as is) and its
   * certificate's profile, or why the certificate is no signing CA.
   */
  #key: ReadKey | undefined;

  /** @param size worker threads, at least 1 */
  constructor(readonly size: number) {
    if (!Number.isSafeInteger(size) || size < 1) throw new Error(`signing pool: size must be at least 1, got ${size}`);
    this.#slots = new Array<Slot | undefined>(size).fill(undefined);
    this.#url = workerUrl();
  }

  /**
   * Signs the chunk with `ca` at `now` on the least busy worker: one outcome per CSR, in order.
   *
   * @throws Error when the pool is closed or the worker failed (a bug, not a refused CSR)
   */
  sign(ca: SigningCaKey, now: Date, items: readonly CsrToSign[]): Promise<CsrSigningOutcome[]> {
    if (this.#closed) return Promise.reject(new Error('signing pool: closed'));
    if (items.length === 0) return Promise.resolve([]);
    const { key, profile } = this.#keyOf(ca);
    // The refusal a worker gave such a key before it was read here (the pool's callers see one message either way).
    if ('problem' in profile)
      return Promise.reject(new Error(`signing worker: no usable key ${ca.id}: ${profile.problem}`));
    const slot = this.#leastBusy();
    if (slot.keyId !== ca.id) {
      slot.worker.postMessage({ type: 'key', keyId: ca.id, profile, privateKey: key } satisfies ToSigningWorker);
      slot.keyId = ca.id;
    }
    const job = this.#nextJob++;
    return new Promise<CsrSigningOutcome[]>((resolve, reject) => {
      if (slot.pending.size === 0) slot.worker.ref();
      slot.pending.set(job, { size: items.length, resolve, reject });
      slot.load += items.length;
      slot.worker.postMessage({ type: 'sign', job, keyId: ca.id, now: now.getTime(), items } satisfies ToSigningWorker);
    });
  }

  /** Worker threads running now (they start on first use and again after one failed). */
  get running(): number {
    return this.#slots.filter((slot) => slot !== undefined && !slot.stopped).length;
  }

  /** Ends every worker; chunks still in progress reject. */
  async close(): Promise<void> {
    this.#closed = true;
    const slots = this.#slots.splice(0, this.#slots.length, ...new Array<undefined>(this.#slots.length));
    await Promise.all(slots.map((slot) => (slot === undefined ? undefined : slot.worker.terminate())));
  }

  #keyOf(ca: SigningCaKey): ReadKey {
    if (this.#key?.id !== ca.id) {
      const key = ca.privateKey instanceof KeyObject ? ca.privateKey : KeyObject.from(ca.privateKey);
      let profile: ReadKey['profile'];
      try {
        const read = caProfileOf(ca.certificateDer);
        profile = { ...read, trustDomain: read.trustDomain?.name };
      } catch (error) {
        profile = { problem: messageOf(error) };
      }
      this.#key = { id: ca.id, key, profile };
    }
    return this.#key;
  }

  #leastBusy(): Slot {
    let best: Slot | undefined;
    for (let index = 0; index < this.#slots.length; index++) {
      let slot = this.#slots[index];
      if (slot === undefined || slot.stopped) slot = this.#slots[index] = this.#start();
      if (best === undefined || slot.load < best.load) best = slot;
      if (best.load === 0) break;
    }
    return best!;
  }

  #start(): Slot {
    const worker = new Worker(this.#url, { name: 'sigil-signing' });
    // An idle worker does not keep the process alive; one with chunks in progress does (ref'd while it has them).
    worker.unref();
    const slot: Slot = { worker, keyId: undefined, load: 0, pending: new Map(), stopped: false };
    worker.on('message', (message: FromSigningWorker) => {
      const pending = slot.pending.get(message.job);
      if (pending === undefined) return;
      slot.pending.delete(message.job);
      slot.load -= pending.size;
      if (slot.pending.size === 0) worker.unref();
      if ('error' in message) pending.reject(new Error(message.error));
      else pending.resolve(message.outcomes);
    });
    const stop = (error: Error): void => {
      if (slot.stopped) return;
      slot.stopped = true;
      for (const pending of slot.pending.values()) pending.reject(error);
      slot.pending.clear();
      slot.load = 0;
    };
    worker.on('error', (error) => stop(new Error(`signing worker failed: ${error.message}`, { cause: error })));
    worker.on('exit', (code) => stop(new Error(`signing worker stopped (exit code ${code})`)));
    return slot;
  }
}
