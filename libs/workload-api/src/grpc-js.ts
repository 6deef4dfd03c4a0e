/**
 * `@sigil/workload-api/grpc-js`: channel credentials for `@grpc/grpc-js` with mutual SPIFFE authentication. A
 * separate entry point, so that `@grpc/grpc-js` (an optional peer dependency) is loaded only by those who use it.
 *
 * @packageDocumentation
 */
import { type ChannelCredentials, experimental } from '@grpc/grpc-js';
import { type Authorizer } from './authorizer.js';
import { WorkloadApiError } from './errors.js';
import { type SpiffeTlsConfig, type X509TlsSource, serverIdentityCheck, tlsMaterial } from './tls.js';

/** What {@link createGrpcChannelCredentials} needs: a TLS source that reports updates. `X509Source` is one. */
export interface WatchedX509TlsSource extends X509TlsSource {
  /** Calls `listener` after every update; returns the function that stops it. */
  onUpdate(listener: () => void): () => void;
}

type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

/** A grpc-js certificate provider fed by the source: the current SVID and bundles, again after each update. */
class SourceCertificateProvider implements experimental.CertificateProvider {
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();
  private stop: (() => void) | undefined;

  constructor(private readonly source: WatchedX509TlsSource) {}

  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    this.watch();
    listener(this.update()?.ca ?? null);
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
    this.unwatch();
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    this.watch();
    listener(this.update()?.identity ?? null);
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
    this.unwatch();
  }

  private update():
    { ca: experimental.CaCertificateUpdate; identity: experimental.IdentityCertificateUpdate } | undefined {
    try {
      const { key, cert, ca } = tlsMaterial(this.source);
      return {
        ca: { caCertificate: Buffer.from(ca) },
        identity: { certificate: Buffer.from(cert), privateKey: Buffer.from(key) },
      };
    } catch {
      // The source is closed: no credentials, so new connections fail (closed, never open).
      return undefined;
    }
  }

  private watch(): void {
    this.stop ??= this.source.onUpdate(() => {
      const update = this.update();
      for (const listener of this.caListeners) listener(update?.ca ?? null);
      for (const listener of this.identityListeners) listener(update?.identity ?? null);
    });
  }

  private unwatch(): void {
    if (this.caListeners.size > 0 || this.identityListeners.size > 0) return;
    this.stop?.();
    this.stop = undefined;
  }
}

/**
 * `@grpc/grpc-js` channel credentials with mutual SPIFFE authentication (go-spiffe `grpccredentials.MTLSClientCredentials`
 * of spiffe/go-spiffe/v2/spiffegrpc):
 * each new connection presents the source's current SVID (updated on rotation, through grpc-js's certificate
 * provider interface) and accepts the server only if its X.509-SVID verifies against the bundle of its own trust
 * domain and `authorizer` agrees, the same check as `createClientTlsOptions`; host names are not checked.
 * grpc-js builds the TLS context itself, so the lowest TLS version is Node's default (1.2), not the helpers' 1.3.
 *
 * @example
 * ```ts
 * const credentials = createGrpcChannelCredentials(source, authorizeId('spiffe://example.org/server'));
 * const client = new grpc.Client('127.0.0.1:8443', credentials);
 * ```
 * @throws WorkloadApiError `ERR_ARGUMENT_INVALID` when the authorizer is missing.
 */
export function createGrpcChannelCredentials(
  source: WatchedX509TlsSource,
  authorizer: Authorizer,
  config: Pick<SpiffeTlsConfig, 'now'> = {},
): ChannelCredentials {
  if (typeof source?.onUpdate !== 'function') {
    throw new WorkloadApiError('ERR_ARGUMENT_INVALID', 'the source must report updates (onUpdate), as X509Source does');
  }
  const now = config.now ?? (() => new Date());
  const provider = new SourceCertificateProvider(source);
  return experimental.createCertificateProviderChannelCredentials(provider, provider, {
    checkServerIdentity: serverIdentityCheck(source, authorizer, now),
    rejectUnauthorized: true,
  });
}
