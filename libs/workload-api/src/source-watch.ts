import { type CallOptions, type ErrorHandler, type UpdateHandler, WorkloadApiClient } from './client.js';
import { type WorkloadApiClientOptions } from './client.js';
import { WorkloadApiError } from './errors.js';

/** Options shared by {@link X509Source.create} and {@link JwtSource.create}. */
export interface SourceOptions {
  /** A client to use (left open by `close()`); default: a client the source makes from `clientOptions` and owns. */
  readonly client?: WorkloadApiClient;
  /** Options of the client the source makes when `client` is not given (address, backoff). */
  readonly clientOptions?: WorkloadApiClientOptions;
  /**
   * How long `create` waits for the first update before it rejects with `ERR_TIMEOUT`, in milliseconds. Default: no
   * limit, as go-spiffe: a workload started before its entry exists waits (retrying) until it gets an identity.
   */
  readonly timeoutMs?: number;
  /** Aborts `create` (it rejects with the signal's reason and the source is closed). */
  readonly signal?: AbortSignal;
  /** Told about every failure of the underlying watch (each is retried unless it is `INVALID_ARGUMENT`). */
  readonly onError?: ErrorHandler;
}

type Watch<T> = (onUpdate: UpdateHandler<T>, onError: ErrorHandler, options: CallOptions) => Promise<void>;

/** The running watch behind a source: its client, and how to stop both. */
export class SourceWatch {
  private constructor(
    readonly client: WorkloadApiClient,
    private readonly ownsClient: boolean,
    private readonly stopper: AbortController,
  ) {}

  /**
   * Starts `watch` on a client from `options` and resolves once `apply` has received the first update; rejects (and
   * stops everything) on timeout, abort, or a failure that is not retried.
   */
  static async start<T>(
    what: string,
    options: SourceOptions,
    watchOf: (client: WorkloadApiClient) => Watch<T>,
    apply: (update: T) => void,
  ): Promise<SourceWatch> {
    options.signal?.throwIfAborted();
    const client = options.client ?? new WorkloadApiClient(options.clientOptions);
    const running = new SourceWatch(client, options.client === undefined, new AbortController());
    let lastError: WorkloadApiError | undefined;
    let cleanup = (): void => undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        let settled = false;
        const settle = (error?: unknown): void => {
          if (settled) return;
          settled = true;
          cleanup();
          if (error === undefined) resolve();
          else reject(error);
        };
        const timer =
          options.timeoutMs === undefined
            ? undefined
            : setTimeout(() => {
                const last = lastError === undefined ? '' : ` (last error: ${lastError.message})`;
                settle(new WorkloadApiError('ERR_TIMEOUT', `${what}: no update within ${options.timeoutMs} ms${last}`));
              }, options.timeoutMs);
        const onAbort = (): void => settle(options.signal?.reason);
        options.signal?.addEventListener('abort', onAbort, { once: true });
        cleanup = () => {
          clearTimeout(timer);
          options.signal?.removeEventListener('abort', onAbort);
        };
        watchOf(client)(
          (update) => {
            apply(update);
            settle();
          },
          (error) => {
            lastError = error;
            options.onError?.(error);
          },
          { signal: running.stopper.signal },
        ).then(
          () => settle(new WorkloadApiError('ERR_CLOSED', `${what}: closed before the first update`)),
          (error: unknown) => settle(error),
        );
      });
    } catch (error) {
      await running.stop();
      throw error;
    }
    return running;
  }

  get isStopped(): boolean {
    return this.stopper.signal.aborted;
  }

  /** Ends the watch, and closes the client if the source made it. */
  async stop(): Promise<void> {
    if (this.stopper.signal.aborted) return;
    this.stopper.abort();
    if (this.ownsClient) await this.client.close();
  }
}
