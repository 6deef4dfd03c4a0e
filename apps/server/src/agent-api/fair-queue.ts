/** One turn of a caller: a chunk of its work, started when the queue gives it a slot. */
interface Turn {
  readonly size: number;
  readonly start: () => Promise<void>;
}

export interface FairQueueOptions {
  /** Items a caller's work is cut into per turn. */
  readonly chunkSize: number;
  /** Turns running at once, over every caller. */
  readonly concurrency: number;
  /** Items waiting (not yet started), over every caller; past it `run` refuses. */
  readonly maxQueuedItems: number;
  /** Items waiting of one caller; past it `run` refuses that caller (no cap by default). */
  readonly maxQueuedItemsPerCaller?: number;
  /**
   * Whether a request that finds a free slot starts its first chunk at once (the default), or in the next turn of
   * the event loop like every other: for work that is cheap to queue and costly to run, so that the requests read in
   * one turn do not all run their work in that turn.
   */
  readonly startAtOnce?: boolean;
  /**
   * The share of the event loop's time the queue's work may take, over 0 and at most 1 (1, no pause, by default):
   * after a turn that took `t` ms, the next starts no sooner than `t × (1 − share) / share` ms later. For costly work
   * that anybody can ask for (an unauthenticated first check of a certificate chain): a burst of it then delays
   * every other request's turns of the loop by at most that share, where one check per turn of the loop delayed each
   * turn of another request (a real node's several database round trips) by a whole check.
   */
  readonly maxBusyShare?: number;
  /** The clock the busy share is measured with, in milliseconds (`performance.now()` by default). */
  readonly now?: () => number;
}

/** The queue holds too many items already (of every caller, or of this one); nothing of the request was queued. */
export class FairQueueFullError extends Error {
  override readonly name = 'FairQueueFullError';

  constructor(
    message: string,
    /** Which cap: `all` (maxQueuedItems) or `caller` (maxQueuedItemsPerCaller). */
    readonly cap: 'all' | 'caller' = 'all',
  ) {
    super(message);
  }
}

/**
 * Round robin over callers, one chunk per turn: a caller with 2,000 items queued and one with a single item each get
 * the next free slot in turn, so the single item waits for at most one chunk per busy caller, never for the whole
 * backlog of another. At most `concurrency` chunks are in progress at once, and at most one is started per turn of
 * the event loop (SPIRE signs a batch in the caller's goroutine; Node has one thread, so here the fairness has to be
 * explicit): a chunk whose work is synchronous (X.509 signing is) runs to its end in the microtasks after it starts,
 * so one chunk is all the event loop waits for before it reads the next request.
 */
export class FairQueue {
  /** Callers with turns waiting, in the order they are served: a served caller goes to the back. */
  private readonly waiting = new Map<string, Turn[]>();
  private running = 0;
  private queuedItems = 0;
  /** A pump is scheduled for the next event loop turn (one at most). */
  private pumpScheduled = false;
  /** Milliseconds of pause after each millisecond a turn took ({@link FairQueueOptions.maxBusyShare}). */
  private readonly restPerBusyMs: number;
  /** With a busy share: no turn starts before this time (on {@link now}). */
  private restUntil = 0;
  private readonly now: () => number;

  constructor(private readonly options: FairQueueOptions) {
    if (!(options.chunkSize >= 1 && options.concurrency >= 1 && options.maxQueuedItems >= 1)) {
      throw new Error('fair queue: chunkSize, concurrency and maxQueuedItems must be at least 1');
    }
    const share = options.maxBusyShare ?? 1;
    if (!(share > 0 && share <= 1)) throw new Error('fair queue: maxBusyShare must be over 0 and at most 1');
    this.restPerBusyMs = (1 - share) / share;
    this.now = options.now ?? (() => performance.now());
  }

  /** Items waiting for a turn, over every caller. */
  get queued(): number {
    return this.queuedItems;
  }

  /** Callers with work waiting. */
  get callers(): number {
    return this.waiting.size;
  }

  /**
   * Runs `work` over `items` in chunks, in turn with the other callers; resolves with the results in the items'
   * order. `work` gets a chunk and the index of its first item and must return one result per item.
   *
   * @throws FairQueueFullError when the items would take the queue past `maxQueuedItems`, or the caller's items past
   *   `maxQueuedItemsPerCaller` (nothing is queued then).
   */
  run<T, R>(
    caller: string,
    items: readonly T[],
    work: (chunk: readonly T[], offset: number) => Promise<readonly R[]>,
  ): Promise<R[]> {
    if (items.length === 0) return Promise.resolve([]);
    if (this.queuedItems + items.length > this.options.maxQueuedItems) {
      return Promise.reject(
        new FairQueueFullError(
          `signing queue full: ${this.queuedItems} items waiting, at most ${this.options.maxQueuedItems}`,
        ),
      );
    }
    const perCaller = this.options.maxQueuedItemsPerCaller;
    if (perCaller !== undefined) {
      const waitingOfCaller = (this.waiting.get(caller) ?? []).reduce((sum, turn) => sum + turn.size, 0);
      if (waitingOfCaller + items.length > perCaller) {
        return Promise.reject(
          new FairQueueFullError(`${waitingOfCaller} items of this caller waiting, at most ${perCaller}`, 'caller'),
        );
      }
    }
    const { chunkSize } = this.options;
    const chunks: Promise<readonly R[]>[] = [];
    let turns = this.waiting.get(caller);
    if (turns === undefined) {
      turns = [];
      this.waiting.set(caller, turns);
    }
    for (let offset = 0; offset < items.length; offset += chunkSize) {
      const chunk = items.slice(offset, offset + chunkSize);
      chunks.push(
        new Promise<readonly R[]>((resolve, reject) => {
          turns.push({
            size: chunk.length,
            start: async () => {
              try {
                resolve(await work(chunk, offset));
              } catch (error) {
                reject(error as Error);
              }
            },
          });
        }),
      );
    }
    this.queuedItems += items.length;
    // A free slot is used at once: a request read in a long poll phase (1,000 busy connections) would otherwise
    // wait for the end of that phase before its first chunk started.
    if (this.options.startAtOnce === false) this.schedulePump();
    else this.pump();
    return Promise.all(chunks).then((results) => results.flat() as R[]);
  }

  /**
   * Starts the next turn in a later event loop turn, once: started from each finished chunk instead, the turns of
   * a batch multiplied (4 chunks finishing in one turn of the loop scheduled 4 pumps, which started 16 chunks in the
   * next one, then 64), and a profile showed the event loop held for 0.5 s by one agent's signing.
   */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    const run = () => {
      this.pumpScheduled = false;
      this.pump();
    };
    const rest = this.restUntil - this.now();
    if (rest > 0) setTimeout(run, rest);
    else setImmediate(run);
  }

  /** Starts one turn, if a slot is free and a caller waits; the next one in a later turn of the event loop. */
  private pump(): void {
    if (this.running >= this.options.concurrency) return;
    if (this.restUntil > this.now()) {
      this.schedulePump();
      return;
    }
    const next = this.waiting.entries().next();
    if (next.done) return;
    const [caller, turns] = next.value;
    const turn = turns.shift()!;
    // Served: to the back of the line, or out of it when it has nothing left.
    this.waiting.delete(caller);
    if (turns.length > 0) this.waiting.set(caller, turns);
    this.queuedItems -= turn.size;
    this.running++;
    const began = this.now();
    void turn.start().finally(() => {
      this.running--;
      if (this.restPerBusyMs > 0) {
        const now = this.now();
        this.restUntil = Math.max(this.restUntil, now + (now - began) * this.restPerBusyMs);
      }
      this.schedulePump();
    });
    // Another slot is free: used in the next turn of the loop, after the requests that arrived meanwhile were read.
    if (this.running < this.options.concurrency && this.waiting.size > 0) this.schedulePump();
  }
}
