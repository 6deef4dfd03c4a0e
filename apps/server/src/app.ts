import 'reflect-metadata';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { type AddressInfo } from 'node:net';
import { Logger, type Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { type Logger as PinoLogger } from 'pino';
import { refuseSpentSigningEarly } from './agent-api/early-refusal.js';
import { AgentSigningBudget } from './agent-api/signing-budget.js';
import { MAX_SYNC_WAIT_MS } from './agent-api/sync.service.js';
import { AdminSocketConnections } from './auth/admin-socket-connections.js';
import { closeAdminSocket, listenOnAdminSocket } from './auth/admin-socket.js';
import { PUBLIC_BUDGET_CONFIG } from './auth/public.decorator.js';
import { IgnoredRetryAfter } from './auth/ignored-retry-after.js';
import { PublicRateLimits } from './auth/public-rate-limits.js';
import { BundleService } from './bundle/bundle.service.js';
import { CaService } from './ca/ca.service.js';
import { KeyManager } from './ca/key-manager.js';
import { type Clock, systemClock } from './common/clock.js';
import { type ConnectionLimits, connectionServerOptions, TlsConnectionGuard } from './common/connection-limits.js';
import { ErrorFilter } from './common/error.filter.js';
import { createRootLogger, PinoLoggerService } from './common/logging.js';
import { LogLevelService } from './logger/log-level.service.js';
import { serveOpenApi } from './common/openapi.js';
import { CaServerCredentialSource, type ServerCredentialSource, ServerTlsRefresher } from './common/server-tls.js';
import { ATTESTATION_BODY_LIMIT_BYTES, BODY_LIMIT_BYTES, createJsonBodyParser } from './common/request-body.js';
import { createValidationPipe } from './common/validation.js';
import { type ServerConfig } from './config.js';
import { type BundleEndpointListener, listenForBundleEndpoint } from './federation/bundle-endpoint.js';
import { countHttpResponses } from './health/http-metrics.js';
import { isMetricsListenerPath, listenForMetrics } from './health/metrics-listener.js';
import { isOidcDiscoveryPath } from './oidc/oidc-discovery.js';
import { listenForPaths, requestPath } from './common/path-listener.js';
import { MetricsService } from './health/metrics.service.js';
import { NodeAttestorRegistry } from './node-attestation/node-attestors.js';
import type { NodeAttestor } from './node-attestation/node-attestor.js';
import { ServerModule } from './server.module.js';

export interface ServerAppOptions {
  clock?: Clock;
  /** Root logger; by default JSON lines on stdout at the configured level. */
  logger?: PinoLogger;
  /** Node attestors besides the built-in ones (a test's own); `--node-attestor` enables them like the others. */
  nodeAttestors?: readonly Type<NodeAttestor>[];
}

/** A Nest app built by {@link createServerApp}: initialised, not yet listening. */
export interface BuiltServerApp {
  app: NestFastifyApplication;
  /** The TCP listener (TLS); Fastify's own server. */
  tlsServer: HttpsServer;
  /** The TLS port's connection policy, installed on {@link tlsServer}; its counts are for tests and benches. */
  connections: TlsConnectionGuard;
  /** Fastify's request handler, to serve the same routes on another listener. */
  routing: (request: IncomingMessage, response: ServerResponse) => void;
  /** Every route the app serves (Nest's and the OpenAPI ones), e.g. for a test that checks auth on each. */
  routes: readonly ServedRoute[];
}

export interface ServedRoute {
  method: string;
  url: string;
}

/** A running server: TLS on the TCP port, plain HTTP on the admin socket. */
export interface RunningServer {
  readonly app: NestFastifyApplication;
  /** Address the TCP (TLS) listener is bound to. */
  readonly address: AddressInfo;
  readonly adminSocket: string;
  /** Address of the `/metrics` and `/docs` listener, when `metricsAddress` is configured. */
  readonly metricsAddress?: AddressInfo;
  /** Address of the federation bundle endpoint, when `bundleEndpoint` is configured. */
  readonly bundleEndpointAddress?: AddressInfo;
  /** Address of the OIDC discovery listener, when `oidcDiscovery` is configured. */
  readonly oidcDiscoveryAddress?: AddressInfo;
  readonly routes: readonly ServedRoute[];
  /** The TLS port's connection policy (its refusal and timeout counts). */
  readonly connections: TlsConnectionGuard;
  /** Stops both listeners, the CA timers and the database (and the embedded PostgreSQL); safe to call twice. */
  close(): Promise<void>;
}

/**
 * Builds and initialises the Nest app: modules, the JSON body parser (size and depth bounded, see request-body.ts),
 * the global validation pipe and error filter (Nest also routes Fastify's own errors, such as an oversized body,
 * through it), request logging, OpenAPI at `/docs`. Migrations run when the database module opens the database.
 */
export async function createServerApp(config: ServerConfig, options: ServerAppOptions = {}): Promise<BuiltServerApp> {
  const rootLogger = options.logger ?? createRootLogger(config.logLevel, undefined, config);
  const nestLogger = new PinoLoggerService(rootLogger);
  Logger.overrideLogger(nestLogger);

  // The TCP listener is TLS only; its certificate is installed from our CA once the app is up (see startServer).
  // Client certificates are requested, not required: agents present their SVID, admins may use a bearer token.
  const limits = connectionLimits(config);
  const tlsServer = createHttpsServer({
    minVersion: 'TLSv1.3',
    requestCert: true,
    rejectUnauthorized: false,
    ...connectionServerOptions(limits),
  });
  const connections = new TlsConnectionGuard(limits, options.clock ?? systemClock, new Logger('TlsConnections'));
  connections.attach(tlsServer);
  let routing: BuiltServerApp['routing'] | undefined;
  const adapter = new FastifyAdapter({
    bodyLimit: BODY_LIMIT_BYTES,
    logger: false,
    serverFactory: (handler: (request: IncomingMessage, response: ServerResponse) => void) => {
      routing = handler;
      tlsServer.on('request', handler);
      return tlsServer as unknown as HttpServer;
    },
  });
  const app = await NestFactory.create<NestFastifyApplication>(
    ServerModule.forRoot(config, options.clock ?? systemClock, options.nodeAttestors),
    adapter,
    // Body parsing is ours (below), not Nest's: its JSON parser has no depth bound, and the API takes no forms.
    { logger: nestLogger, abortOnError: false, bodyParser: false },
  );
  app.get(LogLevelService).attach(rootLogger, config.logLevel);
  const fastify = app.getHttpAdapter().getInstance();
  // The one body parser of every route (the TLS port and the admin socket share this routing): JSON only, its nesting
  // bounded before anything parses or transforms it. Any other content type gets 415.
  const defaultJsonParser = fastify.getDefaultJsonParser('error', 'error') as unknown as Parameters<
    typeof createJsonBodyParser
  >[0];
  fastify.removeAllContentTypeParsers();
  fastify.addContentTypeParser(
    'application/json',
    { parseAs: 'buffer', bodyLimit: BODY_LIMIT_BYTES },
    createJsonBodyParser(defaultJsonParser),
  );
  // Paths served on a listener of their own instead (startServer); the admin socket, a local file, keeps them. OIDC
  // discovery never is on the TLS port: its consumers are outside the trust domain and do not trust its certificate.
  const elsewhere: [(url: string | undefined) => boolean, string][] = [[isOidcDiscoveryPath, 'the OIDC discovery']];
  if (config.metricsAddress !== undefined) elsewhere.push([isMetricsListenerPath, 'the metrics']);
  fastify.addHook('onRequest', (request, reply, done) => {
    if (request.raw.socket === undefined || !('encrypted' in request.raw.socket)) return done();
    const listener = elsewhere.find(([served]) => served(request.url))?.[1];
    if (listener === undefined) return done();
    void reply
      .code(404)
      .send({ error: 'not_found', message: `${requestPath(request.url)} is served on ${listener} address only` });
  });
  // A 429 that ignored the connection's last Retry-After is held, then closes it (ignored-retry-after.ts).
  const ignoredRetryAfter = app.get(IgnoredRetryAfter);
  fastify.addHook('onRequest', ignoredRetryAfter.onRequest);
  fastify.addHook('onSend', ignoredRetryAfter.onSend);
  // Open routes over their source address's budget are refused here, before the body is read (public-rate-limits.ts).
  fastify.addHook('onRequest', app.get(PublicRateLimits).onRequest);
  // Signing requests of an agent whose budget is spent, likewise, on a connection it authenticated before.
  fastify.addHook('onRequest', refuseSpentSigningEarly(app.get(AgentSigningBudget), BODY_LIMIT_BYTES));
  // Open attestation routes read a small body only (a route's bodyLimit overrides the parser's).
  fastify.addHook('onRoute', (route) => {
    const config = route.config as Record<string, unknown> | undefined;
    if (config?.[PUBLIC_BUDGET_CONFIG] === 'attestation') route.bodyLimit ??= ATTESTATION_BODY_LIMIT_BYTES;
  });
  const routes: ServedRoute[] = [];
  fastify.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) if (method !== 'HEAD') routes.push({ method, url: route.url });
  });
  const metrics = app.get(MetricsService);
  const attestors = app.get(NodeAttestorRegistry);
  countHttpResponses(fastify, metrics, (segment) => attestors.enabledTypeAt(segment));
  metrics.addCounterFrom(
    'sigil_tls_connections_refused_total',
    'Connections to the TLS port closed at accept, by the limit that refused them',
    ['reason'],
    () => Object.entries(connections.counts().refused).map(([reason, value]) => ({ labels: { reason }, value })),
  );
  const requestLogger = new Logger('Http');
  fastify.addHook('onResponse', (request, reply, done) => {
    // Checked first: building the line for nothing was ~2 % of the server's CPU under a flood of refused requests.
    if (!rootLogger.isLevelEnabled('debug')) return done();
    requestLogger.debug({
      msg: 'request served',
      method: request.method,
      url: request.url.split('?')[0],
      statusCode: reply.statusCode,
      ms: Math.round(reply.elapsedTime),
    });
    done();
  });
  app.useGlobalPipes(createValidationPipe());
  app.useGlobalFilters(new ErrorFilter(BODY_LIMIT_BYTES));
  serveOpenApi(app);
  await app.init();
  if (!routing) throw new Error('fastify did not build its server through serverFactory');
  return { app, tlsServer, connections, routing, routes };
}

/**
 * The TLS port's connection policy from the config. A connection waiting on an answer may be silent for the longest
 * sync long-poll plus the time to build a large answer; 30 s more than the long-poll leaves that margin.
 */
export function connectionLimits(config: ServerConfig): ConnectionLimits {
  return {
    maxConnections: config.maxConnections,
    maxConnectionsPerAddress: config.maxConnectionsPerAddress,
    handshakeRatePerSecond: config.tlsHandshakeRatePerSecond,
    handshakeBurst: config.tlsHandshakeBurst,
    handshakeTimeoutMs: config.tlsHandshakeTimeoutSeconds * 1000,
    headersTimeoutMs: config.httpHeadersTimeoutSeconds * 1000,
    requestTimeoutMs: config.httpRequestTimeoutSeconds * 1000,
    idleTimeoutMs: config.httpIdleTimeoutSeconds * 1000,
    responseIdleTimeoutMs: MAX_SYNC_WAIT_MS + 30_000,
  };
}

/**
 * Starts the server: builds the app, installs the TLS certificate (`spiffe://<td>/sigil/server`, kept fresh),
 * listens on the TCP port and on the admin Unix socket.
 */
export async function startServer(
  config: ServerConfig,
  options: ServerAppOptions & { credentials?: ServerCredentialSource } = {},
): Promise<RunningServer> {
  const { app, tlsServer, connections, routing, routes } = await createServerApp(config, options);
  const logger = new Logger('SigilServer');
  const source =
    options.credentials ?? new CaServerCredentialSource(app.get(CaService), app.get(BundleService), config.trustDomain);
  const refresher = new ServerTlsRefresher(tlsServer, source, options.clock ?? systemClock);
  // A new active key, a taint or a revoke: the server's own certificate is re-issued at once by the active key.
  const unsubscribeKeys = app.get(KeyManager).onChange(() => refresher.refreshNow());
  let adminServer: HttpServer | undefined;
  let metricsServer: HttpServer | undefined;
  let metricsAddress: AddressInfo | undefined;
  let oidcServer: HttpServer | undefined;
  let oidcAddress: AddressInfo | undefined;
  let bundleEndpoint: BundleEndpointListener | undefined;
  let closing: Promise<void> | undefined;
  // A kept-alive connection that is busy when the server stops stays open for as long as its client keeps sending
  // on it (agents keep theirs): once stopping, every answer, including those being prepared, closes its connection.
  let stopping = false;
  const answering = new Set<ServerResponse>();
  const closeAfter = (response: ServerResponse): void => {
    if (!response.headersSent) response.setHeader('connection', 'close');
  };
  tlsServer.on('request', (_request: IncomingMessage, response: ServerResponse) => {
    if (stopping) return closeAfter(response);
    answering.add(response);
    response.once('close', () => answering.delete(response));
  });
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      stopping = true;
      for (const response of answering) closeAfter(response);
      unsubscribeKeys();
      refresher.stop();
      if (adminServer) await closeAdminSocket(adminServer);
      await bundleEndpoint?.close();
      for (const server of [metricsServer, oidcServer]) {
        if (server === undefined) continue;
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
      await app.close();
      logger.log({ msg: 'server stopped' });
    })());

  try {
    await refresher.start();
    // Node's default accept queue is 511, too short for a burst (see DEFAULT_LISTEN_BACKLOG).
    await app.listen({ port: config.port, host: config.bindAddress, backlog: config.listenBacklog });
    adminServer = await listenOnAdminSocket(config.adminSocket, routing, app.get(AdminSocketConnections));
    if (config.metricsAddress !== undefined) {
      ({ server: metricsServer, address: metricsAddress } = await listenForMetrics(config.metricsAddress, routing));
    }
    if (config.oidcDiscovery !== undefined) {
      ({ server: oidcServer, address: oidcAddress } = await listenForPaths(
        config.oidcDiscovery.address,
        routing,
        isOidcDiscoveryPath,
        'this listener serves GET /.well-known/openid-configuration and /keys only',
      ));
    }
    if (config.bundleEndpoint !== undefined) {
      bundleEndpoint = await listenForBundleEndpoint(
        config.bundleEndpoint,
        routing,
        source,
        connectionLimits(config),
        options.clock ?? systemClock,
      );
    }
  } catch (error) {
    await close();
    throw error;
  }
  if (config.trustDomainIsDefault) {
    logger.warn({
      msg: 'no trust domain configured, using example.org: set --trust-domain before issuing real identities',
    });
  }
  const address = tlsServer.address() as AddressInfo;
  logger.log({
    msg: 'sigil-server listening',
    trustDomain: config.trustDomain.name,
    address: `${address.address}:${address.port}`,
    adminSocket: config.adminSocket,
    ...(metricsAddress && { metricsAddress: `${metricsAddress.address}:${metricsAddress.port}` }),
    ...(bundleEndpoint && {
      bundleEndpoint: `${bundleEndpoint.address.address}:${bundleEndpoint.address.port}`,
      bundleEndpointProfile: config.bundleEndpoint?.profile,
    }),
    ...(oidcAddress && { oidcDiscoveryAddress: `${oidcAddress.address}:${oidcAddress.port}` }),
    ...(config.jwtIssuer !== undefined && { jwtIssuer: config.jwtIssuer }),
  });
  return {
    app,
    address,
    adminSocket: config.adminSocket,
    ...(metricsAddress && { metricsAddress }),
    ...(bundleEndpoint && { bundleEndpointAddress: bundleEndpoint.address }),
    ...(oidcAddress && { oidcDiscoveryAddress: oidcAddress }),
    routes,
    connections,
    close,
  };
}
