import { type DescMessage, type MessageInitShape, type MessageShape, create, toBinary } from '@bufbuild/protobuf';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import { RateLimitedLog, ContextLogger } from '@sigil/logging';
import { jwtAudienceProblem, singleAudienceProblem } from '@sigil/runtime';
import { SpiffeError, SpiffeId, TrustBundleSet, parseAndValidateJwtSvid } from '@sigil/spiffe';
import {
  JWTBundlesResponseSchema,
  type JWTSVIDRequest,
  type JWTSVIDResponseSchema,
  type SpiffeWorkloadAPI,
  type ValidateJWTSVIDRequest,
  type ValidateJWTSVIDResponseSchema,
  X509BundlesResponseSchema,
  X509SVIDResponseSchema,
} from '@sigil/workload-api/service';
import { type Selector } from '@sigil/runtime';
import { AgentApiError } from '../../client/server-client.js';
import { type JwtSvidCaller, JwtSvidLimitError } from '../../manager/jwt-signing-lane.js';
import { changes } from './change-stream.js';
import { type PeerCredentials } from '../peer-credentials.js';
import { CallerAttestation, type CallerAttestor, readyBundles } from './caller-attestation.js';
import {
  type AgentBundles,
  type WorkloadIdentity,
  claimsStruct,
  federatedBundlesFor,
  jwtBundlesResponse,
  servableIdentities,
  uniqueByHint,
  x509BundlesResponse,
  x509SvidResponse,
} from './workload-responses.js';

export type { CallerAttestor } from './caller-attestation.js';

/**
 * What the Workload API needs from the agent's SVID cache. Reads are synchronous so that the bundles and the
 * identities of one response come from one state of the cache.
 *
 * The identities and bundles it gives are never changed in place: a change (a rotated SVID, an entry's new hint or
 * federated trust domains, a new bundle) gives new objects. A stream relies on it to skip a change that left its
 * caller's objects as they were (`changedOnly`); a cache that changed an object in place would leave streams without
 * the update.
 */
export interface IdentityCache {
  /**
   * The agent's trust bundles (the `own` bundle and the federated ones, never changed in place); undefined until the
   * agent is ready to serve (attested, first bundle received).
   */
  bundles(): AgentBundles | undefined;
  /**
   * The identities of every entry whose selectors are all among `selectors`, in a stable order: the first is the
   * workload's default identity. An identity is never changed in place (see above).
   */
  identitiesFor(selectors: readonly Selector[]): readonly WorkloadIdentity[];
  /**
   * A JWT-SVID of `identity` for `audience` (fresh enough to use), signed by the server or from a cache.
   * @throws JwtSvidLimitError when it must be signed and `caller` is over its limits.
   */
  fetchJwtSvid(identity: WorkloadIdentity, audience: readonly string[], caller: JwtSvidCaller): Promise<string>;
  /**
   * The limit error {@link fetchJwtSvid} would throw for `caller` when no token for `audience` is cached or being
   * signed for any identity (the request can only be a miss) and `caller` is over its limits; else undefined. Asked
   * before the caller is attested, so a flood of misses past the limits costs no attestation. Optional: a cache
   * without miss limits has nothing to refuse early.
   */
  jwtSvidMissRefusal?(audience: readonly string[], caller: JwtSvidCaller): JwtSvidLimitError | undefined;
  /** Calls `listener` after every change (rotation, entry added or removed, bundle change); returns unsubscribe. */
  subscribe(listener: () => void): () => void;
  /**
   * A caller with these selectors wants its X509-SVIDs until the returned function is called (lazy signing signs
   * them, and keeps them while the caller is live). Optional: a cache that signs every entry has nothing to do.
   */
  watch?(selectors: readonly Selector[]): () => void;
}

export interface WorkloadApiHandlerOptions {
  /** Current time for JWT-SVID validation; default `new Date()`. */
  readonly now?: () => Date;
  readonly logger?: Pick<ContextLogger, 'debug' | 'warn'>;
}

const NO_IDENTITY = 'no identity issued';

/**
 * The five RPCs of the SPIFFE Workload API (SPIRE `handler.go`). The security header and the caller's peer
 * credentials were checked by the middleware; each RPC then validates its input, checks the agent is ready,
 * attests the caller, matches its identities and answers. Streams attest once and keep those selectors, sending
 * the full state on connect and after every change of the cache, and end with `PERMISSION_DENIED` once the caller
 * matches no entry any more.
 */
export class WorkloadApiHandler {
  private readonly now: () => Date;
  private readonly logger: Pick<ContextLogger, 'debug' | 'warn'>;
  // Every caller can make these lines as often as it calls: a few per uid (or entry) and interval, then a count.
  private readonly limitedLog: RateLimitedLog;
  private readonly callers: CallerAttestation;

  constructor(
    attestor: CallerAttestor,
    private readonly cache: IdentityCache,
    options: WorkloadApiHandlerOptions = {},
  ) {
    this.now = options.now ?? (() => new Date());
    this.logger = options.logger ?? new ContextLogger(WorkloadApiHandler.name);
    const now = this.now;
    // Only warn lines go through it; the other levels are there for the type.
    const warn = (fields: unknown): void => this.logger.warn(fields);
    this.limitedLog = new RateLimitedLog({ warn, error: warn, log: warn }, { now: () => now().getTime() });
    this.callers = new CallerAttestation(attestor, this.limitedLog, this.logger);
  }

  /** The connect service implementation to register for `SpiffeWorkloadAPI`. */
  service(): ServiceImpl<typeof SpiffeWorkloadAPI> {
    return {
      fetchX509SVID: (_request, context) => this.fetchX509Svid(context),
      fetchX509Bundles: (_request, context) => this.fetchX509Bundles(context),
      fetchJWTSVID: (request, context) => this.fetchJwtSvid(request, context),
      fetchJWTBundles: (_request, context) => this.fetchJwtBundles(context),
      validateJWTSVID: (request, context) => this.validateJwtSvid(request, context),
    };
  }

  async *fetchX509Svid(context: HandlerContext): AsyncGenerator<MessageShape<typeof X509SVIDResponseSchema>> {
    this.readyBundles();
    const selectors = await this.attest(context, 'FetchX509SVID');
    const changed = changedOnly(X509SVIDResponseSchema);
    const unwatch = this.cache.watch?.(selectors);
    try {
      for await (const _ of changes(this.cache, context.signal)) {
        const bundles = this.readyBundles();
        const servable = servableIdentities(this.matchingIdentities(selectors));
        // An expired SVID is never served; the stream ends once nothing valid is left, so the client knows.
        if (servable.kind === 'expired') throw new ConnectError(servable.message, Code.Unavailable);
        // The first answer and every later one must be complete; an SVID still being signed arrives with a change.
        if (servable.kind === 'pending') continue;
        const { identities } = servable;
        const response = changed(
          responseInputs(identities, bundles),
          () => x509SvidResponse(identities, bundles),
          identities.length,
        );
        if (response !== undefined) yield response;
      }
    } finally {
      unwatch?.();
    }
  }

  async *fetchX509Bundles(context: HandlerContext): AsyncGenerator<MessageShape<typeof X509BundlesResponseSchema>> {
    this.readyBundles();
    const selectors = await this.attest(context, 'FetchX509Bundles');
    const changed = changedOnly(X509BundlesResponseSchema);
    for await (const _ of changes(this.cache, context.signal)) {
      const bundles = this.readyBundles();
      const identities = this.matchingIdentities(selectors);
      const response = changed(responseInputs(identities, bundles), () => x509BundlesResponse(identities, bundles));
      if (response !== undefined) yield response;
    }
  }

  async *fetchJwtBundles(context: HandlerContext): AsyncGenerator<MessageShape<typeof JWTBundlesResponseSchema>> {
    this.readyBundles();
    const selectors = await this.attest(context, 'FetchJWTBundles');
    const changed = changedOnly(JWTBundlesResponseSchema);
    for await (const _ of changes(this.cache, context.signal)) {
      const bundles = this.readyBundles();
      const identities = this.matchingIdentities(selectors);
      const response = changed(responseInputs(identities, bundles), () => jwtBundlesResponse(identities, bundles));
      if (response !== undefined) yield response;
    }
  }

  async fetchJwtSvid(
    request: JWTSVIDRequest,
    context: HandlerContext,
  ): Promise<MessageInitShape<typeof JWTSVIDResponseSchema>> {
    const audience = validAudience(request.audience);
    const requested = request.spiffeId === '' ? undefined : parseRequestedSpiffeId(request.spiffeId);
    this.readyBundles();
    const caller = this.caller(context);
    const early = this.cache.jwtSvidMissRefusal?.(audience, caller);
    if (early !== undefined) throw this.refuseOverLimit(early);
    const selectors = await this.attest(context, 'FetchJWTSVID');
    const identities = this.matchingIdentities(selectors).filter(
      (identity) => requested === undefined || identity.spiffeId.equals(requested),
    );
    if (identities.length === 0) throw new ConnectError(NO_IDENTITY, Code.PermissionDenied);
    const svids = await Promise.all(
      identities.map(async (identity) => {
        try {
          const svid = await this.cache.fetchJwtSvid(identity, audience, caller);
          return { spiffeId: identity.spiffeId.toString(), svid, hint: identity.hint };
        } catch (error) {
          if (error instanceof JwtSvidLimitError) throw this.refuseOverLimit(error);
          if (error instanceof AgentApiError && error.status === 429) {
            throw new ConnectError(
              `could not fetch a JWT-SVID for ${identity.spiffeId.toString()}: the server is rate limiting this ` +
                `agent (${error.message}); retry later`,
              Code.ResourceExhausted,
            );
          }
          throw new ConnectError(
            `could not fetch a JWT-SVID for ${identity.spiffeId.toString()}: ${(error as Error).message}`,
            Code.Unavailable,
          );
        }
      }),
    );
    return { svids };
  }

  async validateJwtSvid(
    request: ValidateJWTSVIDRequest,
    context: HandlerContext,
  ): Promise<MessageInitShape<typeof ValidateJWTSVIDResponseSchema>> {
    if (request.audience === '') throw new ConnectError('audience must be specified', Code.InvalidArgument);
    const audienceProblem = singleAudienceProblem(request.audience);
    if (audienceProblem !== undefined) throw new ConnectError(audienceProblem, Code.InvalidArgument);
    if (request.svid === '') throw new ConnectError('svid must be specified', Code.InvalidArgument);
    this.readyBundles();
    const selectors = await this.attest(context, 'ValidateJWTSVID');
    const bundles = this.readyBundles();
    const identities = uniqueByHint(this.cache.identitiesFor(selectors));
    const trusted = new TrustBundleSet([bundles.own, ...federatedBundlesFor(identities, bundles)]);
    try {
      const svid = await parseAndValidateJwtSvid(request.svid, trusted, [request.audience], { now: this.now() });
      return { spiffeId: svid.spiffeId.toString(), claims: claimsStruct(svid.claims) };
    } catch (error) {
      if (error instanceof SpiffeError) throw new ConnectError(error.message, Code.InvalidArgument);
      throw error;
    }
  }

  /** Logs (rate limited) and maps a refusal over the caller's JWT-SVID limits to its gRPC answer. */
  private refuseOverLimit(error: JwtSvidLimitError): ConnectError {
    this.limitedLog.warn(`jwt ${error.limit}, uid ${error.uid}`, {
      msg: 'refusing JWT-SVID requests over the caller limits',
      uid: error.uid,
      reason: error.message,
    });
    return new ConnectError(error.message, Code.ResourceExhausted);
  }

  private readyBundles(): AgentBundles {
    return readyBundles(this.cache);
  }

  private caller(context: HandlerContext): PeerCredentials {
    return this.callers.callerOf(context);
  }

  private attest(context: HandlerContext, method: string): Promise<readonly Selector[]> {
    return this.callers.attest(context, method);
  }

  /** The caller's identities, at least one, with unique hints. */
  private matchingIdentities(selectors: readonly Selector[]): WorkloadIdentity[] {
    const identities = uniqueByHint(this.cache.identitiesFor(selectors), (dropped) =>
      this.limitedLog.warn(`hint of entry ${dropped.entryId}`, {
        msg: 'entry ignored: another entry of the workload has the same hint',
        entryId: dropped.entryId,
        hint: dropped.hint,
      }),
    );
    if (identities.length === 0) throw new ConnectError(NO_IDENTITY, Code.PermissionDenied);
    return identities;
  }
}

/**
 * Filters a stream's responses down to those that differ from the last one sent. The cache reports every change of
 * any workload; resending an identical state would make clients that reload on updates do so for nothing (the
 * standard warns against pushing too often, §4.3).
 *
 * `inputs` are what a response is made from: the caller's identities and the bundles, which the cache replaces when
 * they change and never changes in place. When each is the very object the last response was made from, the answer
 * is the same and is neither built nor encoded (a change of another workload's entry costs this stream nothing);
 * otherwise the new response is compared with the last by their encodings (equal content from new objects is not
 * sent again), unless it lists another number of items (`count`, when given: the SVIDs of an X.509 response), which
 * makes it another response. The transport encodes what is sent; this encodes only to compare.
 */
function changedOnly<S extends DescMessage>(
  schema: S,
): (inputs: readonly object[], build: () => MessageInitShape<S>, count?: number) => MessageShape<S> | undefined {
  // The last response as its encoding once known, else as the message (encoded only if a comparison needs it).
  let last: { inputs: readonly object[]; count?: number; sent: MessageShape<S> | Uint8Array } | undefined;
  return (inputs, build, count) => {
    if (last !== undefined && sameObjects(last.inputs, inputs)) return undefined;
    const message = create(schema, build());
    const before = last;
    last = { inputs, sent: message, ...(count !== undefined && { count }) };
    if (before === undefined || (count !== undefined && count !== before.count)) return message;
    const bytes = toBinary(schema, message);
    last.sent = bytes;
    const sentBytes = before.sent instanceof Uint8Array ? before.sent : toBinary(schema, before.sent);
    return Buffer.compare(sentBytes, bytes) === 0 ? undefined : message;
  };
}

function sameObjects(a: readonly object[], b: readonly object[]): boolean {
  return a.length === b.length && a.every((item, i) => item === b[i]);
}

/** What a stream's response is made from (for {@link changedOnly}). */
function responseInputs(identities: readonly WorkloadIdentity[], bundles: AgentBundles): object[] {
  return [...identities, bundles.own, ...bundles.federated];
}

/** `audience` of `JWTSVIDRequest`: Sigil's audience rule (at least one, a bounded number of bounded size). */
function validAudience(audience: readonly string[]): string[] {
  // SPIRE's message for the missing audience, which clients may look for.
  if (audience.length === 0) throw new ConnectError('audience must be specified', Code.InvalidArgument);
  const problem = jwtAudienceProblem(audience);
  if (problem !== undefined) throw new ConnectError(problem, Code.InvalidArgument);
  return [...audience];
}

function parseRequestedSpiffeId(value: string): SpiffeId {
  try {
    return SpiffeId.parse(value);
  } catch (error) {
    throw new ConnectError(`spiffe_id: ${(error as Error).message}`, Code.InvalidArgument);
  }
}
