import { KeyObject, constants as cryptoConstants } from 'node:crypto';
import { type RequestListener } from 'node:http';
import { Agent as HttpsAgent, type Server as HttpsServer, createServer as createHttpsServer } from 'node:https';
import {
  type ConnectionOptions,
  type PeerCertificate,
  type SecureVersion,
  Server,
  type TLSSocket,
  type TlsOptions,
} from 'node:tls';
import {
  type BundleSource,
  type SpiffeId,
  type TrustBundle,
  type X509Svid,
  encodePem,
  idFromCertificate,
  peerCertificateChain,
} from '@sigil/spiffe';
import { type Authorizer } from './authorizer.js';
import { WorkloadApiError } from './errors.js';
import { type VerifiedPeer, verifyPeer, verifyPeerSync } from './peer-verification.js';

/**
 * What a TLS client that only verifies needs: the X.509 bundles to verify the server with. `X509Source` is one; so
 * is a `TrustBundleSet` or a single `TrustBundle` (e.g. from {@link loadX509Bundle}) for a client without an SVID.
 */
export type X509BundleTlsSource =
  (BundleSource & ({ getBundles(): Iterable<TrustBundle> } | Iterable<TrustBundle>)) | TrustBundle;

/** What the TLS helpers need: the SVID to present and the X.509 bundles to verify peers with. `X509Source` is one. */
export interface X509TlsSource extends BundleSource {
  /** The SVID to present on the next connection. */
  getX509Svid(): X509Svid;
  /** Every X.509 bundle held. */
  getBundles(): Iterable<TrustBundle>;
}

/** What a TLS server that only presents its SVID needs. `X509Source` is one. */
export interface X509SvidTlsSource {
  /** The SVID to present on the next connection. */
  getX509Svid(): X509Svid;
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
  /**
   * For `https.request`: this options object's own kept-alive connections, never shared with another authorizer's
   * (a reused connection is not checked again). Spread the options whole, or keep this agent, when adding to them.
   */
  readonly agent: HttpsAgent;
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
      // PEM of the SVID's own DER bytes. Node's X509Certificate of those bytes would read a PEM block embedded in
      // them (an extension, say) as the certificate, and TLS would then present that one (review R16 LOW-1).
      cert: encodePem(
        'CERTIFICATE',
        svid.certificates.map((cert) => new Uint8Array(cert.rawData)),
      ),
    };
    materials.set(svid, material);
  }
  return material;
}

/** The bundles of a source, a bundle set or a single bundle. */
function bundlesOf(source: X509BundleTlsSource): Iterable<TrustBundle> {
  if ('getBundles' in source && typeof source.getBundles === 'function') return source.getBundles();
  if (Symbol.iterator in source) return source as Iterable<TrustBundle>;
  return [source as TrustBundle];
}

function authoritiesPem(source: X509BundleTlsSource): string {
  const bundles = bundlesOf(source);
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

const SECURE_OPTIONS = cryptoConstants.SSL_OP_NO_TICKET;

/**
 * Presents the source's current SVID on every new connection of `server`: when the SVID has rotated, the secure
 * context is replaced just before the connection's handshake starts (works with and without SNI, no restart).
 */
function presentSvid(server: Server, source: X509SvidTlsSource, minVersion: SecureVersion): void {
  let presented: X509Svid | undefined;
  const present = (): void => {
    const svid = source.getX509Svid();
    if (svid === presented) return;
    server.setSecureContext({ ...materialOf(svid), minVersion, secureOptions: SECURE_OPTIONS });
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
}

/**
 * Holds back `secureConnection` until the client's X.509-SVID has passed `verifyX509Svid` against the bundle of its
 * trust domain and the authorizer; a refused connection is destroyed and reported as `tlsClientError`.
 */
function verifyClients(server: Server, source: BundleSource, authorizer: Authorizer, now: () => Date): void {
  const emit = server.emit as (this: Server, event: string | symbol, ...args: unknown[]) => boolean;
  server.emit = function (this: Server, event: string | symbol, ...args: unknown[]): boolean {
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
  } as Server['emit'];
}

/**
 * Arms a server made elsewhere: client certificates requested or not (Node reads `requestCert` for each new
 * connection; its own client check stays off, the SPIFFE check replaces it) and the SVID presented with rotation.
 */
function armServer(
  server: Server,
  what: string,
  source: X509SvidTlsSource,
  requestCert: boolean,
  minVersion: SecureVersion,
): void {
  checkArmable(server, what);
  const fields = server as unknown as { requestCert: boolean; rejectUnauthorized: boolean };
  fields.requestCert = requestCert;
  fields.rejectUnauthorized = false;
  presentSvid(server, source, minVersion);
}

/** Refuses a server that is not a TLS server or already listens (connections before arming would be unverified). */
function checkArmable(server: Server, what: string): void {
  if (!(server instanceof Server)) {
    throw new WorkloadApiError(
      'ERR_ARGUMENT_INVALID',
      `${what}: the server must be a TLS server (tls.createServer, https.createServer, http2.createSecureServer)`,
    );
  }
  if (server.listening) throw new WorkloadApiError('ERR_ARGUMENT_INVALID', `${what}: call it before listen()`);
  if (armed.has(server)) throw new WorkloadApiError('ERR_ARGUMENT_INVALID', `${what}: the server is already armed`);
  armed.add(server);
}

const armed = new WeakSet<Server>();

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
  requireAuthorizer(authorizer);
  const attached = new WeakSet<Server>();
  return {
    requestCert: true,
    rejectUnauthorized: false,
    minVersion,
    secureOptions: SECURE_OPTIONS,
    attach<S extends Server>(server: S): S {
      if (attached.has(server)) return server;
      if ((server as unknown as { requestCert?: unknown }).requestCert !== true) {
        throw new Error(
          'attach: the server must be created with these options (it does not request client certificates)',
        );
      }
      if (armed.has(server)) throw new Error('attach: the server is already armed by attachMtls or attachTls');
      attached.add(server);
      armed.add(server);
      presentSvid(server, source, minVersion);
      verifyClients(server, source, authorizer, now);
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
  return Object.defineProperties(verifyingClientOptions(source, authorizer, config), {
    key: { enumerable: true, get: () => materialOf(source.getX509Svid()).key },
    cert: { enumerable: true, get: () => materialOf(source.getX509Svid()).cert },
  }) as SpiffeClientTlsOptions;
}

/** The options both client helpers share: Node's chain check on the held bundles only, then the SPIFFE check. */
function verifyingClientOptions(
  source: X509BundleTlsSource,
  authorizer: Authorizer,
  config: SpiffeTlsConfig,
): SpiffeTlsClientOptions {
  const { minVersion, now } = settings(config);
  const options = {
    rejectUnauthorized: true as const,
    minVersion,
    session: undefined,
    checkServerIdentity: serverIdentityCheck(source, authorizer, now),
    // Its own pool of kept-alive connections: `checkServerIdentity` runs in the handshake only, and Node's global
    // agent names its pools by host, port and TLS material, not by this check, so a connection that another options
    // object's authorizer accepted would be reused for this one without asking its authorizer.
    agent: new HttpsAgent({ keepAlive: true }),
  };
  return Object.defineProperty(options, 'ca', {
    enumerable: true,
    get: () => authoritiesPem(source),
  }) as typeof options & Pick<SpiffeTlsClientOptions, 'ca'>;
}

/**
 * The `checkServerIdentity` of the client helpers: the server's chain passes `verifyX509SvidSync` against the bundle
 * of its own trust domain and `authorizer` agrees, or the handshake fails with `ERR_PEER_REJECTED`. Shared with the
 * gRPC channel credentials.
 */
export function serverIdentityCheck(
  source: X509BundleTlsSource,
  authorizer: Authorizer,
  now: () => Date,
): (hostname: string, cert: PeerCertificate) => Error | undefined {
  requireAuthorizer(authorizer);
  return (_hostname, cert) => {
    try {
      verifyPeerSync(peerCertificateChain(cert), source, authorizer, now());
      return undefined;
    } catch (error) {
      return error as Error;
    }
  };
}

/** PEM of the current SVID (key, chain) and of every held X.509 authority; for the gRPC credentials. */
export function tlsMaterial(source: X509TlsSource): { key: string; cert: string; ca: string } {
  return { ...materialOf(source.getX509Svid()), ca: authoritiesPem(source) };
}

/** Options of the one-way client {@link createTlsClientOptions}: no `key`, no `cert`. */
export interface SpiffeTlsClientOptions extends ConnectionOptions {
  /** Every X.509 authority of every bundle held (PEM), read at each connection; never the system CAs. */
  readonly ca: string;
  readonly rejectUnauthorized: true;
  readonly minVersion: SecureVersion;
  readonly checkServerIdentity: (hostname: string, cert: PeerCertificate) => Error | undefined;
  /** This options object's own kept-alive connections (see {@link SpiffeClientTlsOptions.agent}). */
  readonly agent: HttpsAgent;
}

/**
 * Client-side TLS options for one-way TLS (go-spiffe `tlsconfig.TLSClientConfig`): the client presents no
 * certificate but still verifies the server's X.509-SVID against the bundle of the server's trust domain and
 * `authorizer`, exactly as {@link createClientTlsOptions} does; host names are never checked. For clients without an
 * SVID (a bundle loaded from a file is enough) that authenticate otherwise, e.g. with a JWT-SVID bearer token.
 *
 * @example
 * ```ts
 * const bundle = await loadX509Bundle('example.org', '/etc/sigil/bundle.pem');
 * https.get('https://10.0.0.5:8443/', createTlsClientOptions(bundle, authorizeId('spiffe://example.org/api')));
 * ```
 */
export function createTlsClientOptions(
  source: X509BundleTlsSource,
  authorizer: Authorizer,
  config: SpiffeTlsConfig = {},
): SpiffeTlsClientOptions {
  return verifyingClientOptions(source, authorizer, config);
}

function requireAuthorizer(authorizer: Authorizer): void {
  if (typeof authorizer !== 'function') {
    throw new WorkloadApiError('ERR_ARGUMENT_INVALID', 'an authorizer is required (authorizeId, authorizeMemberOf, …)');
  }
}

/**
 * Makes a TLS server created elsewhere (`https.createServer()`, `http2.createSecureServer()`, `tls.createServer()`,
 * or a framework's) a mutual-TLS SPIFFE server in one call, before `listen()` (go-spiffe
 * `spiffetls.Listen` with `MTLSServer`): it requests client certificates, presents the source's current SVID on
 * every connection (rotation without restart), and verifies every client's X.509-SVID and `authorizer` before the
 * server emits `secureConnection`, exactly as {@link createServerTlsOptions} with `attach` does. Options the server
 * was created with for key, certificate or client verification are replaced.
 *
 * @throws WorkloadApiError `ERR_ARGUMENT_INVALID` when `server` is not a TLS server, already listens or is already
 * armed, or `authorizer` is missing.
 */
export function attachMtls<S extends Server>(
  server: S,
  source: X509TlsSource,
  authorizer: Authorizer,
  config: SpiffeTlsConfig = {},
): S {
  const { minVersion, now } = settings(config);
  requireAuthorizer(authorizer);
  armServer(server, 'attachMtls', source, true, minVersion);
  verifyClients(server, source, authorizer, now);
  return server;
}

/**
 * An HTTPS server with mutual SPIFFE authentication, ready to `listen()`: {@link createServerTlsOptions} and `attach`
 * in one call, so the attach step cannot be forgotten. `requestListener` can be any Node request handler (an Express
 * app, Fastify's `serverFactory` handler). For HTTP/2 or plain TLS use {@link attachMtls}.
 *
 * @example
 * ```ts
 * const server = createMtlsServer(source, authorizeId('spiffe://example.org/client'), (req, res) =>
 *   res.end(`hello ${peerSpiffeId(req.socket as TLSSocket)}`),
 * );
 * server.listen(8443);
 * ```
 */
export function createMtlsServer(
  source: X509TlsSource,
  authorizer: Authorizer,
  requestListener?: RequestListener,
  config: SpiffeTlsConfig = {},
): HttpsServer {
  requireAuthorizer(authorizer);
  const options = createServerTlsOptions(source, authorizer, config);
  return options.attach(createHttpsServer(options, requestListener));
}

/**
 * Makes a TLS server created elsewhere a one-way SPIFFE TLS server (go-spiffe `tlsconfig.TLSServerConfig`): it
 * presents the source's current SVID on every connection (rotation without restart) and requests no client
 * certificate, so clients must be authenticated otherwise (e.g. {@link validateBearerJwtSvid}). Call before `listen()`.
 *
 * @throws WorkloadApiError `ERR_ARGUMENT_INVALID` when `server` is not a TLS server, already listens or is already armed.
 */
export function attachTls<S extends Server>(server: S, source: X509SvidTlsSource, config: SpiffeTlsConfig = {}): S {
  armServer(server, 'attachTls', source, false, settings(config).minVersion);
  return server;
}

/** An HTTPS server presenting the source's SVID, without client certificates: {@link attachTls} on a new server. */
export function createTlsServer(
  source: X509SvidTlsSource,
  requestListener?: RequestListener,
  config: SpiffeTlsConfig = {},
): HttpsServer {
  return attachTls(createHttpsServer({}, requestListener), source, config);
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
