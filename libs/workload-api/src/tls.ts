import { KeyObject, X509Certificate, constants as cryptoConstants } from 'node:crypto';
import {
  type ConnectionOptions,
  type PeerCertificate,
  type SecureVersion,
  type Server,
  type TLSSocket,
  type TlsOptions,
} from 'node:tls';
import {
  type BundleSource,
  type SpiffeId,
  type TrustBundle,
  type X509Svid,
  idFromCertificate,
  peerCertificateChain,
} from '@sigil/spiffe';
import { type Authorizer } from './authorizer.js';
import { WorkloadApiError } from './errors.js';
import { type VerifiedPeer, verifyPeer, verifyPeerSync } from './peer-verification.js';

/** What the TLS helpers need: the SVID to present and the X.509 bundles to verify peers with. `X509Source` is one. */
export interface X509TlsSource extends BundleSource {
  /** The SVID to present on the next connection. */
  getX509Svid(): X509Svid;
  /** Every X.509 bundle held. */
  getBundles(): Iterable<TrustBundle>;
}

/** Options of {@link createServerTlsOptions} and {@link createClientTlsOptions}. */
export interface SpiffeTlsConfig {
  /**
   * The lowest TLS version accepted; default `TLSv1.3`, where certificates travel encrypted, so a passive observer
   * cannot read the peers' SPIFFE IDs. Lower it to `TLSv1.2` only for peers that lack 1.3 (older Envoy upstreams).
   */
  readonly minVersion?: 'TLSv1.2' | 'TLSv1.3';
  /** The time peer certificates must be valid at; default: now. */
  readonly now?: () => Date;
}

/** TLS options for `tls.createServer`, `https.createServer` and `http2.createSecureServer`; see `attach`. */
export interface SpiffeServerTlsOptions extends TlsOptions {
  readonly requestCert: true;
  readonly rejectUnauthorized: false;
  readonly minVersion: SecureVersion;
  /**
   * Arms a server created with these options, and returns it. Until then the server has no certificate and every
   * handshake fails, so a forgotten `attach` fails closed. It:
   *
   * - presents the source's current SVID (key and chain) on every new connection: when the SVID has rotated, the
   *   server's secure context is replaced just before the connection's handshake starts (`setSecureContext`), so
   *   rotation needs no restart and works with and without SNI;
   * - verifies each client's X.509-SVID against the bundle of the client's trust domain and calls the authorizer
   *   before the server emits `secureConnection`, so no HTTP, HTTP/2 or TLS handler ever sees a connection that
   *   failed; such a connection is destroyed and reported through `tlsClientError` with a `WorkloadApiError`
   *   `ERR_PEER_REJECTED`.
   *
   * @throws Error when the server was not created with these options (it does not request client certificates).
   */
  attach<S extends Server>(server: S): S;
}

/** TLS options for `tls.connect`, `https.request` / `https.Agent` and `http2.connect`. */
export interface SpiffeClientTlsOptions extends ConnectionOptions {
  /** The current SVID's private key (PEM), read at each connection. */
  readonly key: string;
  /** The current SVID's chain (PEM), read at each connection. */
  readonly cert: string;
  /** Every X.509 authority of every bundle held (PEM), read at each connection; never the system CAs. */
  readonly ca: string;
  readonly rejectUnauthorized: true;
  readonly minVersion: SecureVersion;
  readonly checkServerIdentity: (hostname: string, cert: PeerCertificate) => Error | undefined;
}

interface SvidMaterial {
  readonly key: string;
  readonly cert: string;
}

const materials = new WeakMap<X509Svid, SvidMaterial>();
const authorityPems = new WeakMap<object, string>();
const VERIFIED_PEER = Symbol('sigil.verifiedPeer');

/** PEM key and chain of an SVID, computed once per SVID object (a source replaces the object on rotation). */
function materialOf(svid: X509Svid): SvidMaterial {
  let material = materials.get(svid);
  if (material === undefined) {
    material = {
      key: KeyObject.from(svid.privateKey).export({ type: 'pkcs8', format: 'pem' }) as string,
      cert: svid.certificates.map((cert) => new X509Certificate(Buffer.from(cert.rawData)).toString()).join(''),
    };
    materials.set(svid, material);
  }
  return material;
}

function authoritiesPem(source: X509TlsSource): string {
  const bundles = source.getBundles();
  const cached = authorityPems.get(bundles);
  if (cached !== undefined) return cached;
  const pem = [...bundles].map((bundle) => bundle.x509Pem()).join('');
  authorityPems.set(bundles, pem);
  return pem;
}

function settings(config: SpiffeTlsConfig): { minVersion: SecureVersion; now: () => Date } {
  const minVersion = config.minVersion ?? 'TLSv1.3';
  if (minVersion !== 'TLSv1.2' && minVersion !== 'TLSv1.3') {
    throw new WorkloadApiError(
      'ERR_ARGUMENT_INVALID',
      `minVersion must be TLSv1.2 or TLSv1.3, got ${String(minVersion)}`,
    );
  }
  return { minVersion, now: config.now ?? (() => new Date()) };
}

/**
 * Server-side TLS options for mutual SPIFFE authentication (go-spiffe `tlsconfig.MTLSServerConfig`): the server
 * presents the source's X.509-SVID, requests the client's, verifies it against the bundle of the client's trust
 * domain (never the system CAs, never host names) and lets `authorizer` decide. Node's own client-certificate check
 * is off (`rejectUnauthorized: false`) because it knows neither SPIFFE IDs nor per-trust-domain bundles; the SPIFFE
 * check takes its place in `attach`, which must be called on the server.
 *
 * Session tickets are disabled so that every connection is a full handshake with a freshly verified client.
 *
 * @example
 * ```ts
 * const tlsOptions = createServerTlsOptions(source, authorizeId('spiffe://example.org/client'));
 * const server = tlsOptions.attach(https.createServer(tlsOptions, (req, res) => res.end('hello')));
 * ```
 */
export function createServerTlsOptions(
  source: X509TlsSource,
  authorizer: Authorizer,
  config: SpiffeTlsConfig = {},
): SpiffeServerTlsOptions {
  const { minVersion, now } = settings(config);
  const secureOptions = cryptoConstants.SSL_OP_NO_TICKET;
  const attached = new WeakSet<Server>();
  return {
    requestCert: true,
    rejectUnauthorized: false,
    minVersion,
    secureOptions,
    attach<S extends Server>(server: S): S {
      if (attached.has(server)) return server;
      if ((server as unknown as { requestCert?: unknown }).requestCert !== true) {
        throw new Error(
          'attach: the server must be created with these options (it does not request client certificates)',
        );
      }
      attached.add(server);
      let presented: X509Svid | undefined;
      const present = (): void => {
        const svid = source.getX509Svid();
        if (svid === presented) return;
        server.setSecureContext({ ...materialOf(svid), minVersion, secureOptions });
        presented = svid;
      };
      present();
      server.prependListener('connection', () => {
        try {
          present();
        } catch {
          // The source is closed (the application is shutting down): keep presenting the last SVID.
        }
      });

      const emit = server.emit as (this: S, event: string | symbol, ...args: unknown[]) => boolean;
      server.emit = function (this: S, event: string | symbol, ...args: unknown[]): boolean {
        if (event !== 'secureConnection') return emit.call(this, event, ...args);
        const socket = args[0] as TLSSocket;
        verifyPeer(peerCertificateChain(socket.getPeerCertificate(true)), source, authorizer, now()).then(
          (peer) =>
            process.nextTick(() => {
              if (socket.destroyed) return;
              (socket as unknown as Record<symbol, VerifiedPeer>)[VERIFIED_PEER] = peer;
              emit.call(this, 'secureConnection', socket);
            }),
          (error: unknown) =>
            process.nextTick(() => {
              socket.destroy();
              emit.call(this, 'tlsClientError', error, socket);
            }),
        );
        return true;
      } as S['emit'];
      return server;
    },
  };
}

/**
 * Client-side TLS options for mutual SPIFFE authentication (go-spiffe `tlsconfig.MTLSClientConfig`): the client
 * presents the source's current X.509-SVID and accepts the server only if its X.509-SVID chains to the bundle of the
 * server's trust domain and `authorizer` agrees; host names are never checked. `key`, `cert` and `ca` are getters,
 * read by Node at each connection, so a rotated SVID or bundle applies to the next connection.
 *
 * The check runs in `checkServerIdentity`, inside the handshake and before any application data is written, which is
 * why it is synchronous and why Node's own verification stays on (`rejectUnauthorized: true`, with `ca` limited to
 * the bundles): Node only consults `checkServerIdentity` after OpenSSL has validated the chain. Session resumption
 * is disabled (`session: undefined` overrides `https.Agent`'s session cache), since Node skips
 * `checkServerIdentity` on a resumed session.
 *
 * @example
 * ```ts
 * const tlsOptions = createClientTlsOptions(source, authorizeId('spiffe://example.org/server'));
 * https.get('https://127.0.0.1:8443/', tlsOptions, (res) => res.pipe(process.stdout));
 * ```
 */
export function createClientTlsOptions(
  source: X509TlsSource,
  authorizer: Authorizer,
  config: SpiffeTlsConfig = {},
): SpiffeClientTlsOptions {
  const { minVersion, now } = settings(config);
  const options = {
    rejectUnauthorized: true as const,
    minVersion,
    session: undefined,
    checkServerIdentity: (_hostname: string, cert: PeerCertificate): Error | undefined => {
      try {
        verifyPeerSync(peerCertificateChain(cert), source, authorizer, now());
        return undefined;
      } catch (error) {
        return error as Error;
      }
    },
  };
  return Object.defineProperties(options, {
    key: { enumerable: true, get: () => materialOf(source.getX509Svid()).key },
    cert: { enumerable: true, get: () => materialOf(source.getX509Svid()).cert },
    ca: { enumerable: true, get: () => authoritiesPem(source) },
  }) as typeof options & Pick<SpiffeClientTlsOptions, 'key' | 'cert' | 'ca'>;
}

/**
 * The SPIFFE ID of the peer of a TLS socket set up with these helpers: on the server, the client verified by
 * `attach` (works through the HTTP/2 session socket proxy too); on the client, the server, once the handshake has
 * succeeded. Undefined for any other socket state.
 */
export function peerSpiffeId(socket: TLSSocket): SpiffeId | undefined {
  const verified = (socket as unknown as Record<symbol, VerifiedPeer | undefined>)[VERIFIED_PEER];
  if (verified !== undefined) return verified.spiffeId;
  if (socket.authorized !== true || (socket as unknown as { server?: unknown }).server !== undefined) return undefined;
  const der = socket.getPeerCertificate().raw;
  return der === undefined ? undefined : idFromCertificate(new Uint8Array(der));
}
