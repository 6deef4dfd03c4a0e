import { createHash } from 'node:crypto';
import { type MessageInitShape } from '@bufbuild/protobuf';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import { RateLimitedLog, truncateForLog, ContextLogger } from '@sigil/logging';
import { type Selector, selectorSetKey } from '@sigil/runtime';
import {
  type DiscoveryRequest,
  type DiscoveryResponseSchema,
  SECRET_TYPE_URL,
  type SecretDiscoveryService,
} from '@sigil/workload-api/envoy-sds';
import { CallerAttestation, type CallerAttestor, readyBundles } from '../workload-api/caller-attestation.js';
import { type IdentityCache } from '../workload-api/workload-api.handler.js';
import { federatedBundlesFor, servableIdentities } from '../workload-api/workload-responses.js';
import {
  type SdsSettings,
  type SdsSnapshot,
  SpiffeValidatorRequiredError,
  UnauthorizedSecretsError,
  buildSecrets,
  packSecrets,
} from './sds-secrets.js';
import { SdsStreamState, type SdsSubscription } from './sds-stream-state.js';

type DiscoveryResponseInit = MessageInitShape<typeof DiscoveryResponseSchema>;

/** More names than any Envoy subscribes to on one stream (it opens one stream per secret). */
export const MAX_RESOURCE_NAMES = 256;
/** A SPIFFE ID's limit (2048 bytes); the default names are shorter. */
export const MAX_RESOURCE_NAME_BYTES = 2048;
/**
 * Requests of one stream read ahead of the one being handled. Past it the stream stops reading, so HTTP/2 flow
 * control holds the client back: a caller that writes requests faster than it reads the answers cannot make the
 * agent buffer them (each may be up to the socket's 1 MiB request limit). One: Envoy sends a request and waits for
 * its answer (an ACK or NACK of the last one, or new names), so reading further ahead gains nothing, and 16 decoded
 * requests per stream let a caller that stops reading answers hold 16 MiB per stream (review of the gRPC router).
 */
export const MAX_QUEUED_REQUESTS = 1;

export interface SdsHandlerOptions {
  readonly logger?: Pick<ContextLogger, 'debug' | 'warn'>;
  /** How long a `FetchSecrets` caller's entries stay pinned for lazy signing (default {@link ONE_OFF_PIN_MS}). */
  readonly oneOffPinMs?: number;
}

/**
 * Lazy signing: how long a one-off `FetchSecrets` keeps its caller's entries pinned, as an open stream would. Its first
 * answer asks it to retry while its SVIDs are signed; unpinned at once, they could be dropped as they are stored
 * (past the cache's cap) and signed again at every retry (review R12 M2).
 */
export const ONE_OFF_PIN_MS = 30_000;

/**
 * One-off pins held at once, over all callers: one per set of selectors (a repeated call re-arms its pin), the oldest
 * released early past this. Each pin is a group the lazy cache matches every arriving entry against, so unary calls
 * (which no per-uid stream cap counts) must not multiply them (review R15).
 */
export const MAX_ONE_OFF_PINS = 256;

/** `type_url` and `resource_names` of a request, checked before anything is attested. */
function checkRequest(request: Pick<DiscoveryRequest, 'typeUrl' | 'resourceNames'>): void {
  if (request.typeUrl !== '' && request.typeUrl !== SECRET_TYPE_URL) {
    throw new ConnectError(
      `type_url: must be ${SECRET_TYPE_URL} (or empty), got ${JSON.stringify(truncateForLog(request.typeUrl))}`,
      Code.InvalidArgument,
    );
  }
  if (request.resourceNames.length > MAX_RESOURCE_NAMES) {
    throw new ConnectError(
      `resource_names: at most ${MAX_RESOURCE_NAMES} names, got ${request.resourceNames.length}`,
      Code.InvalidArgument,
    );
  }
  const long = request.resourceNames.find((name) => Buffer.byteLength(name) > MAX_RESOURCE_NAME_BYTES);
  if (long !== undefined) {
    throw new ConnectError(
      `resource_names: each name must be at most ${MAX_RESOURCE_NAME_BYTES} bytes, got ${Buffer.byteLength(long)}`,
      Code.InvalidArgument,
    );
  }
}

/** What identifies one state of a caller's secrets: its SVIDs (chain, so also the key) and the bundles it sees. */
function fingerprint(snapshot: SdsSnapshot): string {
  const hash = createHash('sha256');
  const part = (bytes: Uint8Array | string): void => {
    const data = typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
    hash.update(`${data.length}:`).update(data);
  };
  for (const identity of snapshot.identities) {
    part(identity.spiffeId.toString());
    for (const certificate of identity.x509Svid?.chain ?? []) part(certificate);
  }
  for (const bundle of [snapshot.bundles.own, ...federatedBundlesFor(snapshot.identities, snapshot.bundles)]) {
    part(bundle.trustDomain.name);
    for (const certificate of bundle.x509AuthoritiesDer()) part(certificate);
  }
  return hash.digest('hex');
}

type StreamEvent =
  | { readonly kind: 'request'; readonly request: DiscoveryRequest }
  | { readonly kind: 'end' }
  | { readonly kind: 'error'; readonly error: unknown };

/**
 * Envoy's Secret Discovery Service (xDS v3 SDS) on the Workload API socket, as SPIRE's agent serves it
 * (`pkg/agent/endpoints/sdsv3`): the caller is attested exactly as a Workload API caller is (same attestor, same
 * per-uid limits, `UNAVAILABLE` when it cannot be), and its secrets are those of its identities and of the bundles
 * it may see (`buildSecrets`). A caller no entry matches is not refused: it gets the bundles, and
 * `INVALID_ARGUMENT` for any SVID it names. `DeltaSecrets` is `UNIMPLEMENTED`, as in SPIRE.
 */
export class SdsHandler {
  private readonly logger: Pick<ContextLogger, 'debug' | 'warn'>;
  private readonly limitedLog: RateLimitedLog;
  private readonly oneOffPinMs: number;
  private readonly oneOffPins = new Map<string, { readonly release: () => void; readonly timer: NodeJS.Timeout }>();
  private readonly callers: CallerAttestation;

  constructor(
    attestor: CallerAttestor,
    private readonly cache: IdentityCache,
    private readonly settings: SdsSettings,
    options: SdsHandlerOptions = {},
  ) {
    this.logger = options.logger ?? new ContextLogger(SdsHandler.name);
    this.oneOffPinMs = options.oneOffPinMs ?? ONE_OFF_PIN_MS;
    const warn = (fields: unknown): void => this.logger.warn(fields);
    this.limitedLog = new RateLimitedLog({ warn, error: warn, log: warn });
    this.callers = new CallerAttestation(attestor, this.limitedLog, this.logger);
  }

  /** The connect service implementation to register for `SecretDiscoveryService`. */
  service(): ServiceImpl<typeof SecretDiscoveryService> {
    return {
      // eslint-disable-next-line require-yield
      deltaSecrets: async function* () {
        throw new ConnectError('Method is not implemented', Code.Unimplemented);
      },
      streamSecrets: (requests, context) => this.streamSecrets(requests, context),
      fetchSecrets: (request, context) => this.fetchSecrets(request, context),
    };
  }

  /** Pins a one-off caller's selectors for {@link ONE_OFF_PIN_MS}: one pin per selector set, at most {@link MAX_ONE_OFF_PINS}. */
  private pinOneOff(selectors: readonly Selector[]): void {
    if (this.cache.watch === undefined) return;
    const key = selectorSetKey(selectors);
    const held = this.oneOffPins.get(key);
    if (held !== undefined) {
      // Newest again: re-armed, and last in line to be released early.
      held.timer.refresh();
      this.oneOffPins.delete(key);
      this.oneOffPins.set(key, held);
      return;
    }
    for (const [oldestKey, oldest] of this.oneOffPins) {
      if (this.oneOffPins.size < MAX_ONE_OFF_PINS) break;
      clearTimeout(oldest.timer);
      this.oneOffPins.delete(oldestKey);
      oldest.release();
    }
    const release = this.cache.watch(selectors);
    const timer = setTimeout(() => {
      this.oneOffPins.delete(key);
      release();
    }, this.oneOffPinMs).unref();
    this.oneOffPins.set(key, { release, timer });
  }

  async fetchSecrets(request: DiscoveryRequest, context: HandlerContext): Promise<DiscoveryResponseInit> {
    checkRequest(request);
    readyBundles(this.cache);
    const selectors = await this.callers.attest(context, 'FetchSecrets');
    // A one-off request: lazy signing signs its SVIDs now and keeps them for a while (the retry the answer asks for
    // finds them).
    this.pinOneOff(selectors);
    const snapshot = this.snapshot(selectors);
    if (snapshot === undefined) {
      throw new ConnectError("the caller's X509-SVIDs are still being signed; retry", Code.Unavailable);
    }
    if (snapshot instanceof ConnectError) throw snapshot;
    return { versionInfo: '', typeUrl: request.typeUrl, resources: this.resources(snapshot, request) };
  }

  async *streamSecrets(
    requests: AsyncIterable<DiscoveryRequest>,
    context: HandlerContext,
  ): AsyncGenerator<DiscoveryResponseInit> {
    readyBundles(this.cache);
    const selectors = await this.callers.attest(context, 'StreamSecrets');
    const caller = this.callers.callerOf(context);
    const state = new SdsStreamState();
    const signal = context.signal;

    const queue: StreamEvent[] = [];
    let changed = true;
    let wake: (() => void) | undefined;
    const notify = (): void => {
      wake?.();
      wake = undefined;
    };
    let resumeReading: (() => void) | undefined;
    void (async () => {
      try {
        for await (const request of requests) {
          queue.push({ kind: 'request', request });
          notify();
          while (queue.length >= MAX_QUEUED_REQUESTS && !signal.aborted) {
            await new Promise<void>((resolve) => (resumeReading = resolve));
          }
        }
        queue.push({ kind: 'end' });
      } catch (error) {
        queue.push({ kind: 'error', error });
      }
      notify();
    })();
    const unsubscribe = this.cache.subscribe(() => {
      changed = true;
      notify();
    });
    const unwatch = this.cache.watch?.(selectors);
    signal.addEventListener('abort', notify);

    let snapshot: SdsSnapshot | undefined;
    let lastFingerprint: string | undefined;
    let typeUrl = SECRET_TYPE_URL;
    const respond = (subscription: SdsSubscription): DiscoveryResponseInit => {
      // The snapshot kept may hold an SVID that expired since: never answer with it.
      const now = this.snapshot(selectors);
      if (now instanceof ConnectError) throw now;
      return { ...state.respond(), typeUrl, resources: this.resources(snapshot as SdsSnapshot, subscription) };
    };
    try {
      for (;;) {
        if (signal.aborted) throw signal.reason;
        const event = queue.shift();
        resumeReading?.();
        resumeReading = undefined;
        if (event !== undefined) {
          if (event.kind === 'end') return;
          if (event.kind === 'error') throw event.error;
          const request = event.request;
          checkRequest(request);
          if (request.typeUrl !== '') typeUrl = request.typeUrl;
          const verdict = state.onRequest(request);
          if (verdict.action === 'stale') {
            this.logger.debug(`StreamSecrets: uid ${caller.uid}: ignoring a reply to an older response`);
            continue;
          }
          if (verdict.rejected) {
            this.limitedLog.warn(`sds nack, uid ${caller.uid}`, {
              msg: 'Envoy rejected the secrets it was sent',
              pid: caller.pid,
              uid: caller.uid,
              version: state.version,
              resourceNames: request.resourceNames.map((name) => truncateForLog(name)),
              ...(request.errorDetail !== undefined && { reason: truncateForLog(request.errorDetail.message) }),
            });
          }
          if (verdict.action === 'send') yield respond(state.subscription as SdsSubscription);
          continue;
        }
        if (changed) {
          changed = false;
          const current = this.snapshot(selectors);
          // An SVID still being signed arrives with a later change; the first answer must be complete.
          if (current === undefined) continue;
          // An expired SVID is never served; the stream ends once nothing valid is left, so Envoy knows.
          if (current instanceof ConnectError) throw current;
          const print = fingerprint(current);
          if (print === lastFingerprint) continue;
          lastFingerprint = print;
          snapshot = current;
          if (state.onUpdate()) yield respond(state.subscription as SdsSubscription);
          continue;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    } finally {
      unwatch?.();
      unsubscribe();
      signal.removeEventListener('abort', notify);
      resumeReading?.();
    }
  }

  /**
   * The caller's identities with a valid SVID and the bundles now; undefined while one of its SVIDs is being signed,
   * the `UNAVAILABLE` to answer once none is valid and one has expired ({@link servableIdentities}).
   */
  private snapshot(selectors: readonly Selector[]): SdsSnapshot | ConnectError | undefined {
    const bundles = this.cache.bundles();
    if (bundles === undefined) return undefined;
    const servable = servableIdentities(this.cache.identitiesFor(selectors));
    if (servable.kind === 'pending') return undefined;
    if (servable.kind === 'expired') return new ConnectError(servable.message, Code.Unavailable);
    return { identities: servable.identities, bundles };
  }

  private resources(snapshot: SdsSnapshot, request: SdsSubscription | DiscoveryRequest) {
    try {
      return packSecrets(buildSecrets(snapshot, request, this.settings));
    } catch (error) {
      if (error instanceof UnauthorizedSecretsError) throw new ConnectError(error.message, Code.InvalidArgument);
      if (error instanceof SpiffeValidatorRequiredError) {
        throw new ConnectError(error.message, Code.FailedPrecondition);
      }
      throw error;
    }
  }
}
