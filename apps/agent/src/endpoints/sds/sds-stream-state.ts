import { randomBytes } from 'node:crypto';
import { type Node } from '@sigil/workload-api/envoy-sds';

/** The fields of a `DiscoveryRequest` the protocol reads. */
export interface SdsStreamRequest {
  readonly resourceNames: readonly string[];
  readonly versionInfo: string;
  readonly responseNonce: string;
  readonly node?: Node | undefined;
  /** Set by Envoy when it could not apply the response it names by nonce (a NACK). */
  readonly errorDetail?: { readonly message: string } | undefined;
}

/** What to do with a request of the stream. */
export type SdsRequestVerdict =
  /** Answer now: first request, or new resource names, with a state to answer from. */
  | { readonly action: 'send'; readonly rejected: boolean }
  /** Nothing to send: an ACK, a NACK of the current version, or a first request before the first state. */
  | { readonly action: 'none'; readonly rejected: boolean }
  /** A reply to a response older than the last one sent (its nonce is not the last): ignored, as xDS says. */
  | { readonly action: 'stale' };

/** The last request that counts, as responses are built from it. */
export interface SdsSubscription {
  readonly resourceNames: readonly string[];
  /** The node of this request, or of an earlier one when this one has none (Envoy sends it once). */
  readonly node: Node | undefined;
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(a);
  return b.every((name) => set.has(name));
}

/** SPIRE's nonce: random hex, new for every response of a stream. */
export function randomNonce(): string {
  return randomBytes(8).toString('hex');
}

/**
 * The xDS state-of-the-world protocol of one `StreamSecrets` stream, as SPIRE's agent runs it (`sdsv3/handler.go`),
 * without I/O:
 *
 * - every new state of the caller's identities or bundles ({@link onUpdate}) is a new `version_info` (1, 2, …) and is
 *   sent for the last request that counts, with a fresh `nonce`;
 * - once a response was sent, a request whose `response_nonce` is not the last nonce answers an older response and
 *   is ignored (`stale`); one with the last nonce is an ACK when its `version_info` is the version sent, else a
 *   NACK (Envoy keeps its last good secrets; `error_detail` says why): nothing is resent for either, Envoy gets the
 *   next version when the state changes;
 * - a request with other resource names than the last one is answered at once (from the current state).
 */
export class SdsStreamState {
  private versionCounter = 0;
  private updated = false;
  private lastNonce = '';
  private last: SdsSubscription | undefined;

  constructor(private readonly nextNonce: () => string = randomNonce) {}

  /** The version of the current state ("0" before the first). */
  get version(): string {
    return String(this.versionCounter);
  }

  /** The request responses are built from; undefined before the first request. */
  get subscription(): SdsSubscription | undefined {
    return this.last;
  }

  /** A request arrived. */
  onRequest(request: SdsStreamRequest): SdsRequestVerdict {
    let rejected = false;
    let node = request.node;
    if (this.lastNonce !== '') {
      if (request.responseNonce !== this.lastNonce) return { action: 'stale' };
      rejected = request.errorDetail !== undefined || request.versionInfo !== this.version;
      node ??= this.last?.node;
    }
    const changed = this.last === undefined || !sameNames(this.last.resourceNames, request.resourceNames);
    this.last = { resourceNames: [...request.resourceNames], node };
    return { action: changed && this.updated ? 'send' : 'none', rejected };
  }

  /** The caller's state changed (or is known for the first time); true when a response must be sent. */
  onUpdate(): boolean {
    this.versionCounter++;
    this.updated = true;
    return this.last !== undefined;
  }

  /** The version and a new nonce for the response about to be sent; the nonce becomes the one replies must carry. */
  respond(): { versionInfo: string; nonce: string } {
    this.lastNonce = this.nextNonce();
    return { versionInfo: this.version, nonce: this.lastNonce };
  }
}
