/**
 * Test helper for the agent API: a started sigil-server (TLS listener, admin socket) on this run's database, and a
 * small HTTPS client that presents an agent's X509-SVID. The server runs on PostgreSQL when `DATABASE_URL` is set,
 * otherwise on its own embedded database, as in production.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { type IncomingHttpHeaders } from 'node:http';
import { type Agent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { type webcrypto } from 'node:crypto';
import { createCsr, generateKeyPair, privateKeyToPem, toPem } from '@sigil/pki';
import { TrustBundle, TrustDomain, type SpiffeId } from '@sigil/spiffe';
import { startServer, type RunningServer, type ServerAppOptions } from '../../apps/server/src/app.js';
import type { FakeClock } from './fake-clock.js';
import { createRootLogger } from '../../apps/server/src/common/logging.js';
import { type ServerConfig, type ServerConfigFlags } from '../../apps/server/src/config.js';
import { type TestDatabase } from './database.js';
import { testServerConfig } from './server-config.js';

/** A certificate chain and key to present as the TLS client certificate. */
export interface ClientCredentials {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

export interface AgentApiResponse {
  readonly status: number;
  readonly body: Record<string, unknown>;
  /** The `Retry-After` header, only when the server sent one. */
  readonly retryAfter?: string;
}

/** A running server for agent API tests, with everything it needs removed by `close()`. */
export interface AgentApiTestServer {
  readonly server: RunningServer;
  readonly port: number;
  /** Scratch directory (data dir, admin socket, files the test writes). */
  readonly scratch: string;
  /** Calls the TLS port: JSON in and out; `credentials` make it an mTLS call. */
  call(method: string, path: string, body?: unknown, credentials?: ClientCredentials): Promise<AgentApiResponse>;
  /** The trust bundle the server publishes, parsed from `GET /bundle`. */
  trustBundle(): Promise<TrustBundle>;
  close(): Promise<void>;
}

/** Starts sigil-server for trust domain `example.org` with the given flags, on the fake clock. */
export async function startAgentApiTestServer(options: {
  clock: FakeClock;
  flags?: ServerConfigFlags;
  /** Written into the scratch directory before the server starts (file name to content). */
  prepare?: (scratch: string) => Promise<ServerConfigFlags>;
  /** Node attestors besides the built-in ones, as a test's own plug-in. */
  nodeAttestors?: ServerAppOptions['nodeAttestors'];
}): Promise<AgentApiTestServer> {
  const scratch = await mkdtemp(join(tmpdir(), 'sigil-agent-api-'));
  let db: TestDatabase | undefined;
  try {
    // Written into the scratch directory first, so their flags can name the files.
    const extraFlags = options.prepare ? await options.prepare(scratch) : {};
    let config: ServerConfig;
    ({ config, database: db } = await testServerConfig(
      scratch,
      { logLevel: 'warn', ...options.flags, ...extraFlags },
      { poolSize: 1 },
    ));
    const silent = new Writable({ write: (_chunk, _encoding, done) => done() });
    const server = await startServer(config, {
      clock: options.clock,
      logger: createRootLogger('warn', silent),
      ...(options.nodeAttestors && { nodeAttestors: options.nodeAttestors }),
    });
    const port = server.address.port;
    const call = (method: string, path: string, body?: unknown, credentials?: ClientCredentials) =>
      callTls(port, method, path, body, credentials);
    return {
      server,
      port,
      scratch,
      call,
      trustBundle: async () => {
        const { body } = await call('GET', '/bundle');
        return TrustBundle.parseJwks(TrustDomain.parse('example.org'), body);
      },
      close: async () => {
        await server.close();
        await db?.close();
        await rm(scratch, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await db?.close();
    await rm(scratch, { recursive: true, force: true });
    throw error;
  }
}

/**
 * One HTTPS request on a fresh connection (so each call presents exactly the credentials given). The server
 * certificate is not checked here: tests that care verify it with libs/spiffe at the server's clock time.
 */
export async function callTls(
  port: number,
  method: string,
  path: string,
  body?: unknown,
  credentials?: ClientCredentials,
): Promise<AgentApiResponse> {
  const {
    status,
    body: answer,
    retryAfter,
  } = await requestTls(port, {
    method,
    path,
    body,
    ...(credentials && { credentials }),
  });
  return { status, body: answer, ...(retryAfter !== undefined && { retryAfter }) };
}

/**
 * {@link callTls} with its answer's headers, optionally from another loopback source address (`127.0.0.2`, …), as
 * a second host would call.
 */
export function requestTls(
  port: number,
  options: {
    method: string;
    path: string;
    body?: unknown;
    /** Sent as is (with `content-type: application/json`) instead of `body`, e.g. to send malformed JSON. */
    rawBody?: string;
    credentials?: ClientCredentials;
    localAddress?: string;
    /** Sends on this agent's connections (e.g. a kept-alive one) instead of a fresh connection. */
    agent?: Agent;
  },
): Promise<AgentApiResponse & { headers: IncomingHttpHeaders; reusedConnection: boolean }> {
  const { method, path, body, rawBody, credentials, localAddress, agent = false } = options;
  return new Promise((resolve, reject) => {
    const payload = rawBody ?? (body === undefined ? undefined : JSON.stringify(body));
    const request = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent,
        rejectUnauthorized: false,
        minVersion: 'TLSv1.3',
        headers: payload === undefined ? {} : { 'content-type': 'application/json' },
        ...(localAddress !== undefined && { localAddress }),
        ...(credentials && { cert: credentials.certificatePem, key: credentials.privateKeyPem }),
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const retryAfter = response.headers['retry-after'];
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            reusedConnection: request.reusedSocket,
            body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
            ...(retryAfter !== undefined && { retryAfter }),
          });
        });
      },
    );
    request.on('error', reject);
    request.end(payload);
  });
}

/** A key pair made the way an agent makes one, with CSRs for it. */
export interface TestAgentKey {
  readonly keys: webcrypto.CryptoKeyPair;
  readonly privateKeyPem: string;
  /** A PEM CSR, with a URI SAN when `spiffeId` is given. */
  csr(spiffeId?: SpiffeId): Promise<string>;
}

export async function newAgentKey(): Promise<TestAgentKey> {
  const keys = await generateKeyPair('ec-p256');
  return {
    keys,
    privateKeyPem: privateKeyToPem(keys.privateKey),
    csr: async (spiffeId) => (await createCsr({ keys, ...(spiffeId && { spiffeId }) })).pem,
  };
}

/** TLS client credentials from an `svid` array of the agent API (base64 DER, leaf first) and the key's PEM. */
export function credentialsOf(svid: unknown, privateKeyPem: string): ClientCredentials {
  const chain = svid as string[];
  return {
    certificatePem: chain.map((der) => toPem('CERTIFICATE', Buffer.from(der, 'base64'))).join(''),
    privateKeyPem,
  };
}

/** DER certificates of an `svid` array of the agent API. */
export function derChainOf(svid: unknown): Uint8Array[] {
  return (svid as string[]).map((der) => new Uint8Array(Buffer.from(der, 'base64')));
}
