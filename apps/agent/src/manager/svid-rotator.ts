import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { type ContextLogger } from '@sigil/logging';
import { type KeyType, PEM_LABEL, createCsrFast, generateSigningKey, toPem } from '@sigil/pki';
import { type TrustBundle, verifyX509SvidSync } from '@sigil/spiffe';
import { AGENT_SIGN_BATCHES_IN_FLIGHT, type AgentEntry, MAX_CSR_BATCH, type X509SignResult } from '@sigil/agent-api';
import { type AgentApi } from '../client/agent-api.js';
import { AgentApiError, retryDelayMs } from '../client/server-client.js';
import { Backoff } from '../common/backoff.js';
import { type Clock, systemClock } from '@sigil/runtime';
import { rotationTime } from './rotation.js';
import { type SignedSvid, type SvidCache, svidFingerprint } from './svid-cache.js';

export interface SvidRotatorOptions {
  /** The bundle of our trust domain, to check every SVID the server returns. */
  readonly bundle: () => TrustBundle | undefined;
  readonly clock?: Clock;
  /** Source of the rotation jitter, in [0, 1). */
  readonly random?: () => number;
  readonly keyType?: KeyType;
  /** How long an entry the server refused to sign waits before it is tried again (default 30 s). */
  readonly refusalRetryMs?: number;
  /** Called when the server refuses the agent itself (401/403): the agent manager attests again or stops. */
  readonly onAgentRefused?: (error: AgentApiError) => void;
  readonly backoff?: Backoff;
  /** CSRs per request (default and maximum: the server's limit of 500). */
  readonly batchSize?: number;
  readonly logger?: Pick<ContextLogger, 'warn' | 'debug'>;
  /** Told how many workload X509-SVIDs each batch got signed, and how many the server refused or were rejected. */
  readonly onBatch?: (signed: number, refused: number) => void;
}

/** Returned SVIDs checked between two turns of the event loop (~2 ms each on one core). */
const CHECK_SLICE = 50;

/** Longest a timer sleeps before the rotator looks again (clocks jump; timers cannot be longer than ~24 days). */
const MAX_TIMER_MS = 60_000;

interface PreparedCsr {
  readonly entry: AgentEntry;
  readonly privateKey: Uint8Array;
  /** The SubjectPublicKeyInfo the CSR asks to certify. */
  readonly spkiDer: Uint8Array;
  readonly csrPem: string;
}

/**
 * Keeps every cached entry's X509-SVID signed and fresh (SPIRE `pkg/agent/manager`): for each entry that has no SVID,
 * one for an older version of the entry, or one past its rotation time (half life ± 10 %), it generates a new key
 * pair on the agent (the private key never leaves it), sends the CSRs to the server in batches of at most 500, checks
 * each returned SVID (leaf rules, our key, the entry's SPIFFE ID, chains to our bundle) and stores it. Runs one pass
 * at a time; requests during a pass start another right after it. When the server is unreachable it backs off and
 * the cache keeps serving the SVIDs it has. At most two batches are at the server at once.
 */
export class SvidRotator {
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly backoff: Backoff;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private failureRetryAt: number | undefined;
  private readonly batchSize: number;

  constructor(
    private readonly cache: SvidCache,
    private readonly api: Pick<AgentApi, 'signX509Svids'>,
    private readonly options: SvidRotatorOptions,
  ) {
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.backoff = options.backoff ?? new Backoff(1000, 30_000, this.random);
    this.batchSize = options.batchSize ?? MAX_CSR_BATCH;
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1 || this.batchSize > MAX_CSR_BATCH) {
      throw new Error(`batchSize: must be from 1 to ${MAX_CSR_BATCH}, got ${this.batchSize}`);
    }
  }

  /** Signs whatever is due as soon as possible (a sync brought new or changed entries, or a timer fired). */
  schedule(): void {
    if (this.stopped) return;
    if (this.running !== undefined) {
      this.again = true;
      return;
    }
    this.running = this.loop().finally(() => {
      this.running = undefined;
    });
  }

  /** Resolves when no pass is running or requested (for tests and shutdown). */
  async idle(): Promise<void> {
    while (this.running !== undefined) await this.running;
  }

  /** Stops the timers and waits for a pass in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.idle();
  }

  private async loop(): Promise<void> {
    clearTimeout(this.timer);
    do {
      this.again = false;
      await this.pass();
    } while (this.again && !this.stopped);
    this.arm();
  }

  /**
   * One pass over the due entries, in batches, {@link AGENT_SIGN_BATCHES_IN_FLIGHT} at a time: the agent makes the next
   * batch's keys and checks the last one's SVIDs while the server signs, instead of each side waiting for the other.
   */
  private async pass(): Promise<void> {
    const due = this.cache.entriesToSign(this.clock.now());
    let next = 0;
    let failed = false;
    const lane = async (): Promise<void> => {
      while (!failed && !this.stopped && next < due.length) {
        const start = next;
        next += this.batchSize;
        try {
          // A lane still making its keys when the other failed does not send them: the next pass takes the entries.
          await this.signBatch(due.slice(start, start + this.batchSize), () => !failed && !this.stopped);
          if (failed) return;
          this.backoff.reset();
          this.failureRetryAt = undefined;
          this.cache.signingFailed(undefined);
        } catch (error) {
          // The server refusing the agent itself is reported whatever the other lane met (the manager acts once).
          if (error instanceof AgentApiError && error.isAgentRefused()) this.options.onAgentRefused?.(error);
          if (failed) return;
          failed = true;
          // The rest of the pass waits too (nothing is dropped): the next pass takes every entry still due.
          const delay = retryDelayMs(error, this.backoff.next());
          this.failureRetryAt = this.clock.now().getTime() + delay;
          this.cache.signingFailed((error as Error).message);
          this.options.logger?.warn({
            msg: 'could not sign X509-SVIDs, will retry',
            entries: due.length - start,
            retryInMs: delay,
            reason: (error as Error).message,
          });
        }
      }
    };
    const lanes = Math.min(AGENT_SIGN_BATCHES_IN_FLIGHT, Math.ceil(due.length / this.batchSize));
    await Promise.all(Array.from({ length: lanes }, lane));
  }

  private arm(): void {
    if (this.stopped) return;
    // After a failure everything waits for the backoff, even rotations already overdue.
    const next = this.failureRetryAt ?? this.cache.nextSigningTime()?.getTime();
    if (next === undefined) return;
    const delay = Math.min(Math.max(0, next - this.clock.now().getTime()), MAX_TIMER_MS);
    this.timer = setTimeout(() => this.schedule(), delay);
  }

  private async signBatch(entries: readonly AgentEntry[], send: () => boolean = () => true): Promise<void> {
    const prepared = await Promise.all(entries.map((entry) => this.prepare(entry)));
    if (!send()) return;
    const results = await this.api.signX509Svids(prepared.map(({ entry, csrPem }) => ({ entryId: entry.id, csrPem })));
    const receivedAt = this.clock.now();
    const retryAt = new Date(receivedAt.getTime() + (this.options.refusalRetryMs ?? 30_000));
    const byId = new Map(results.map((result) => [result.entryId, result]));
    // Every SVID is checked first and the good ones stored together: the cache tells its subscribers once for the
    // batch, not once for each SVID (every open stream recomputed its full set after each one: quadratic).
    const good: Array<{ entry: AgentEntry; svid: SignedSvid }> = [];
    for (const [index, csr] of prepared.entries()) {
      // The checks are synchronous: let the Workload API answer between slices of a large batch.
      if (index > 0 && index % CHECK_SLICE === 0) await yieldToEventLoop();
      const result = byId.get(csr.entry.id);
      if (result === undefined) {
        this.cache.refuse(csr.entry, 'the server answer has no result for this entry', retryAt);
      } else if (!result.ok) {
        this.cache.refuse(csr.entry, `${result.code}: ${result.message}`, retryAt);
      } else {
        try {
          good.push({ entry: csr.entry, svid: this.check(csr, result, receivedAt) });
        } catch (error) {
          this.cache.refuse(csr.entry, `returned SVID rejected: ${(error as Error).message}`, retryAt);
        }
      }
    }
    this.cache.storeSvids(good);
    const signed = good.length;
    this.options.onBatch?.(signed, prepared.length - signed);
    this.options.logger?.debug({ msg: 'X509-SVIDs signed', requested: prepared.length, signed });
  }

  private async prepare(entry: AgentEntry): Promise<PreparedCsr> {
    // Node key objects made off the event loop, the SPKI laid out from the key's coordinates and the lean CSR
    // encoder: about a third of the WebCrypto key, OpenSSL's SPKI export and createCsr (bench:agent-fill).
    const { privateKey, spkiDer, pkcs8Der } = await generateSigningKey(this.options.keyType);
    const csr = createCsrFast({ privateKey, spkiDer, spiffeId: entry.spiffeId });
    return {
      entry,
      privateKey: new Uint8Array(pkcs8Der),
      spkiDer,
      csrPem: toPem(PEM_LABEL.certificateRequest, csr),
    };
  }

  private check(csr: PreparedCsr, result: Extract<X509SignResult, { ok: true }>, receivedAt: Date): SignedSvid {
    const bundle = this.options.bundle();
    if (bundle === undefined) throw new Error('no trust bundle to verify it with');
    // verifyX509SvidSync checks the leaf rules and the chain; the key is compared as SPKI bytes rather than by
    // importing the private key, which would cost as much again for every SVID.
    const verified = verifyX509SvidSync([...result.chain], bundle, { now: receivedAt });
    if (!verified.spiffeId.equals(csr.entry.spiffeId)) {
      throw new Error(`it names ${verified.spiffeId.toString()}, expected ${csr.entry.spiffeId.toString()}`);
    }
    const { leaf } = verified;
    if (Buffer.compare(leaf.spki, csr.spkiDer) !== 0) {
      throw new Error('it certifies another public key than the one of the CSR');
    }
    return {
      chain: result.chain,
      privateKey: csr.privateKey,
      signedFor: svidFingerprint(csr.entry),
      spiffeId: verified.spiffeId.toString(),
      notAfter: leaf.notAfter,
      rotateAt: rotationTime({ notBefore: leaf.notBefore, notAfter: leaf.notAfter }, receivedAt, this.random),
      issuers: verified.chainIssuerIds,
    };
  }
}
