import { setTimeout as sleep } from 'node:timers/promises';
import { type JwtSvid, SpiffeId, type TrustBundleSet, parseInsecureJwtSvid } from '@sigil/spiffe';
import { type WorkloadApiAddress, resolveWorkloadApiAddress } from './address.js';
import { type Backoff, ExponentialBackoff } from './backoff.js';
import { GrpcCallError, type GrpcStatus, WorkloadApiError, rpcError } from './errors.js';
import { GrpcChannel, type GrpcTarget } from './grpc-channel.js';
import {
  type WorkloadJwtSvid,
  type X509Context,
  parseJwtBundles,
  parseJwtSvids,
  parseX509Bundles,
  parseX509Context,
} from './responses.js';
import {
  EMPTY_REQUEST,
  type JwtBundlesResponseMessage,
  type X509BundlesResponseMessage,
  type X509SvidResponseMessage,
  decodeJwtBundlesResponse,
  decodeJwtSvidResponse,
  decodeValidateJwtSvidResponse,
  decodeX509BundlesResponse,
  decodeX509SvidResponse,
  encodeJwtSvidRequest,
  encodeValidateJwtSvidRequest,
} from './workload-codec.js';

/** The metadata every Workload API call carries (SPIFFE_Workload_Endpoint.md §3). */
export const SECURITY_HEADER = 'workload.spiffe.io';

/** Options of {@link WorkloadApiClient}. */
export interface WorkloadApiClientOptions {
  /** `unix:///path` or `tcp://IP:PORT`; defaults to the `SPIFFE_ENDPOINT_SOCKET` environment variable. */
  readonly address?: string;
  /** Makes the backoff of each watch; default {@link ExponentialBackoff} (1 s doubling up to 30 s). */
  readonly backoff?: () => Backoff;
}

/** Options of every call. */
export interface CallOptions {
  /** Cancels the call; the returned promise then rejects with the signal's reason. */
  readonly signal?: AbortSignal;
}

/** Parameters of {@link WorkloadApiClient.fetchJwtSvid}. */
export interface FetchJwtSvidParams extends CallOptions {
  /** One audience or several; at least one, none empty. */
  readonly audience: string | readonly string[];
  /** The identity to get a token for, when the workload has several; default: every identity (the first is used). */
  readonly spiffeId?: SpiffeId | string;
}

/** Receives the full current state after every change. */
export type UpdateHandler<T> = (update: T) => void;
/** Receives each failure of a watch, whether it is retried or not. */
export type ErrorHandler = (error: WorkloadApiError) => void;

// SPIFFE_Workload_Endpoint.md §6 and Appendix A: INVALID_ARGUMENT is a client bug and UNIMPLEMENTED an endpoint that
// lacks the RPC; neither improves with retries. Everything else (UNAVAILABLE, PERMISSION_DENIED while the identity is
// being provisioned, a broken connection) is retried with a backoff.
const NOT_RETRIED: ReadonlySet<GrpcStatus | undefined> = new Set(['invalid_argument', 'unimplemented']);

// The RPCs' paths: the proto has no package (SPIFFE_Workload_API.md).
const FETCH_X509_SVID = '/SpiffeWorkloadAPI/FetchX509SVID';
const FETCH_X509_BUNDLES = '/SpiffeWorkloadAPI/FetchX509Bundles';
const FETCH_JWT_SVID = '/SpiffeWorkloadAPI/FetchJWTSVID';
const FETCH_JWT_BUNDLES = '/SpiffeWorkloadAPI/FetchJWTBundles';
const VALIDATE_JWT_SVID = '/SpiffeWorkloadAPI/ValidateJWTSVID';

function grpcTarget(address: WorkloadApiAddress): GrpcTarget {
  if (address.kind === 'unix') return { kind: 'unix', path: address.path };
  return {
    kind: 'tcp',
    url: `http://${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`,
  };
}

function audienceList(method: string, audience: string | readonly string[]): string[] {
  const list = typeof audience === 'string' ? [audience] : [...(audience ?? [])];
  const problem =
    list.length === 0
      ? 'audience must not be empty'
      : list.some((value) => typeof value !== 'string' || value === '')
        ? 'audience values must be non-empty strings'
        : undefined;
  if (problem !== undefined) throw new WorkloadApiError('ERR_ARGUMENT_INVALID', `${method}: ${problem}`);
  return list;
}

/** Reports an exception of a user callback the way an EventEmitter listener's would be, without ending the watch. */
function callSafely<T>(handler: (value: T) => void, value: T): void {
  try {
    handler(value);
  } catch (error) {
    process.nextTick(() => {
      throw error;
    });
  }
}

/**
 * A client of the SPIFFE Workload API (SPIFFE_Workload_API.md) over gRPC, on a Unix domain socket or a TCP address,
 * as go-spiffe's `workloadapi.Client`. Every call carries the `workload.spiffe.io: true` header and takes an
 * `AbortSignal`. Fetches make one attempt; watches deliver the full state on every change and reconnect with a
 * backoff after failures, except `INVALID_ARGUMENT` and `UNIMPLEMENTED`.
 *
 * @example
 * ```ts
 * const client = new WorkloadApiClient({ address: 'unix:///tmp/sigil-agent/public/api.sock' });
 * const { svids, bundles } = await client.fetchX509Context();
 * ```
 */
export class WorkloadApiClient {
  /** The parsed address the client talks to. */
  readonly address: WorkloadApiAddress;
  private readonly channel: GrpcChannel;
  private readonly closing = new AbortController();
  private readonly backoff: () => Backoff;

  /** @throws WorkloadApiError `ERR_ADDRESS_INVALID` when the address is missing or invalid. */
  constructor(options: WorkloadApiClientOptions = {}) {
    this.address = resolveWorkloadApiAddress(options.address);
    this.channel = new GrpcChannel(grpcTarget(this.address), { [SECURITY_HEADER]: 'true' });
    this.backoff = options.backoff ?? (() => new ExponentialBackoff());
  }

  /** The workload's X.509-SVIDs and X.509 bundles, from the first message of `FetchX509SVID`. */
  fetchX509Context(options: CallOptions = {}): Promise<X509Context> {
    return this.call('fetch x509 context', options.signal, async (signal) =>
      parseX509Context(await firstMessage(this.fetchX509SvidStream(signal))),
    );
  }

  /**
   * Watches `FetchX509SVID`: `onUpdate` receives the full X.509 context at once and after every change (rotation,
   * entry added or removed, bundle change). Resolves when `signal` aborts or the client closes; rejects, after
   * telling `onError`, on a failure that is not retried.
   */
  watchX509Context(
    onUpdate: UpdateHandler<X509Context>,
    onError: ErrorHandler = () => undefined,
    options: CallOptions = {},
  ): Promise<void> {
    return this.watch(
      'watch x509 context',
      (signal) => this.fetchX509SvidStream(signal),
      parseX509Context,
      onUpdate,
      onError,
      options.signal,
    );
  }

  /** The X.509 bundles of the workload's trust domain and of the federated ones, by trust domain. */
  fetchX509Bundles(options: CallOptions = {}): Promise<TrustBundleSet> {
    return this.call('fetch x509 bundles', options.signal, async (signal) =>
      parseX509Bundles(await firstMessage(this.fetchX509BundlesStream(signal))),
    );
  }

  /** Watches `FetchX509Bundles`; see {@link WorkloadApiClient.watchX509Context} for the life cycle. */
  watchX509Bundles(
    onUpdate: UpdateHandler<TrustBundleSet>,
    onError: ErrorHandler = () => undefined,
    options: CallOptions = {},
  ): Promise<void> {
    return this.watch(
      'watch x509 bundles',
      (signal) => this.fetchX509BundlesStream(signal),
      parseX509Bundles,
      onUpdate,
      onError,
      options.signal,
    );
  }

  /** A JWT-SVID for `audience`: of `spiffeId` when given, else of the workload's default identity. */
  async fetchJwtSvid(params: FetchJwtSvidParams): Promise<WorkloadJwtSvid> {
    const [first] = await this.fetchJwtSvids(params);
    return first as WorkloadJwtSvid;
  }

  /** JWT-SVIDs for `audience`: one per identity of the workload, or only `spiffeId`'s when given. */
  async fetchJwtSvids(params: FetchJwtSvidParams): Promise<WorkloadJwtSvid[]> {
    const method = 'fetch jwt svid';
    const audience = audienceList(method, params.audience);
    const spiffeId =
      params.spiffeId === undefined
        ? ''
        : (typeof params.spiffeId === 'string' ? SpiffeId.parse(params.spiffeId) : params.spiffeId).toString();
    return this.call(method, params.signal, async (signal) =>
      parseJwtSvids(
        await this.channel.unary(
          FETCH_JWT_SVID,
          encodeJwtSvidRequest({ audience, spiffeId }),
          decodeJwtSvidResponse,
          signal,
        ),
        audience,
      ),
    );
  }

  /** The JWT bundles (JWT authorities) of the workload's trust domain and of the federated ones. */
  fetchJwtBundles(options: CallOptions = {}): Promise<TrustBundleSet> {
    return this.call('fetch jwt bundles', options.signal, async (signal) =>
      parseJwtBundles(await firstMessage(this.fetchJwtBundlesStream(signal))),
    );
  }

  /** Watches `FetchJWTBundles`; see {@link WorkloadApiClient.watchX509Context} for the life cycle. */
  watchJwtBundles(
    onUpdate: UpdateHandler<TrustBundleSet>,
    onError: ErrorHandler = () => undefined,
    options: CallOptions = {},
  ): Promise<void> {
    return this.watch(
      'watch jwt bundles',
      (signal) => this.fetchJwtBundlesStream(signal),
      parseJwtBundles,
      onUpdate,
      onError,
      options.signal,
    );
  }

  /**
   * Has the Workload API validate `token` for `audience` (`ValidateJWTSVID`) and returns it parsed. A token the
   * endpoint refuses rejects with `ERR_RPC_FAILED` and status `invalid_argument`.
   */
  async validateJwtSvid(token: string, audience: string, options: CallOptions = {}): Promise<JwtSvid> {
    const method = 'validate jwt svid';
    if (typeof token !== 'string' || token === '') {
      throw new WorkloadApiError('ERR_ARGUMENT_INVALID', `${method}: token must not be empty`);
    }
    audienceList(method, audience);
    return this.call(method, options.signal, async (signal) => {
      const response = await this.channel.unary(
        VALIDATE_JWT_SVID,
        encodeValidateJwtSvidRequest({ svid: token, audience }),
        decodeValidateJwtSvidResponse,
        signal,
      );
      let svid: JwtSvid;
      try {
        svid = parseInsecureJwtSvid(token, audience);
      } catch (error) {
        throw new WorkloadApiError('ERR_RESPONSE_INVALID', `${method}: ${(error as Error).message}`, { cause: error });
      }
      if (response.spiffeId !== svid.spiffeId.toString()) {
        throw new WorkloadApiError(
          'ERR_RESPONSE_INVALID',
          `${method}: spiffe_id ${JSON.stringify(response.spiffeId)} does not match the token's sub`,
        );
      }
      return svid;
    });
  }

  /** Ends every watch (they resolve), rejects pending fetches with `ERR_CLOSED`, and closes the connection. */
  async close(): Promise<void> {
    if (this.closing.signal.aborted) return;
    this.closing.abort(new WorkloadApiError('ERR_CLOSED', 'workload api client is closed'));
    this.channel.close();
  }

  private fetchX509SvidStream(signal: AbortSignal): AsyncIterable<X509SvidResponseMessage> {
    return this.channel.serverStream(FETCH_X509_SVID, EMPTY_REQUEST, decodeX509SvidResponse, signal);
  }

  private fetchX509BundlesStream(signal: AbortSignal): AsyncIterable<X509BundlesResponseMessage> {
    return this.channel.serverStream(FETCH_X509_BUNDLES, EMPTY_REQUEST, decodeX509BundlesResponse, signal);
  }

  private fetchJwtBundlesStream(signal: AbortSignal): AsyncIterable<JwtBundlesResponseMessage> {
    return this.channel.serverStream(FETCH_JWT_BUNDLES, EMPTY_REQUEST, decodeJwtBundlesResponse, signal);
  }

  private signalFor(method: string, signal: AbortSignal | undefined): AbortSignal {
    if (this.closing.signal.aborted) throw new WorkloadApiError('ERR_CLOSED', `${method}: the client is closed`);
    signal?.throwIfAborted();
    return signal === undefined ? this.closing.signal : AbortSignal.any([this.closing.signal, signal]);
  }

  private async call<T>(
    method: string,
    callerSignal: AbortSignal | undefined,
    run: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const signal = this.signalFor(method, callerSignal);
    try {
      return await run(signal);
    } catch (error) {
      if (callerSignal?.aborted) throw callerSignal.reason;
      if (this.closing.signal.aborted) throw new WorkloadApiError('ERR_CLOSED', `${method}: the client is closed`);
      throw rpcError(method, error);
    }
  }

  private async watch<R, T>(
    method: string,
    open: (signal: AbortSignal) => AsyncIterable<R>,
    parse: (response: R) => T | Promise<T>,
    onUpdate: UpdateHandler<T>,
    onError: ErrorHandler,
    callerSignal: AbortSignal | undefined,
  ): Promise<void> {
    const signal = this.signalFor(method, callerSignal);
    const backoff = this.backoff();
    for (;;) {
      let failure: WorkloadApiError;
      try {
        for await (const response of open(signal)) {
          backoff.reset();
          let update: T;
          try {
            update = await parse(response);
          } catch (error) {
            // A response that does not parse is reported and skipped; the stream stays open (go-spiffe does the same).
            callSafely(onError, rpcError(method, error));
            continue;
          }
          if (signal.aborted) return;
          callSafely(onUpdate, update);
        }
        failure = rpcError(method, new GrpcCallError('unavailable', 'the server ended the stream'));
      } catch (error) {
        if (signal.aborted) return;
        failure = rpcError(method, error);
      }
      if (signal.aborted) return;
      callSafely(onError, failure);
      if (NOT_RETRIED.has(failure.status)) throw failure;
      try {
        await sleep(backoff.next(), undefined, { signal });
      } catch {
        return;
      }
    }
  }
}

async function firstMessage<T>(stream: AsyncIterable<T>): Promise<T> {
  // Leaving the loop early cancels the stream.
  for await (const message of stream) return message;
  throw new GrpcCallError('unavailable', 'the server ended the stream without a response');
}
