import { request as httpRequest } from 'node:http';
import { isIP } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import { sigilServerId } from '@sigil/runtime';
import {
  type SpiffeId,
  type TrustBundle,
  type TrustDomain,
  idFromCertificate,
  peerCertificateChain,
  verifyX509Svid,
} from '@sigil/spiffe';
import { type ServerAddress } from './server-address.js';

/** The agent's client certificate for mTLS (its X509-SVID). */
export interface ClientCredentials {
  readonly certificateChainPem: string;
  readonly privateKeyPem: string;
}

/**
 * How the server is authenticated: by the bundle of our trust domain (the normal case), or, with insecure
 * bootstrap and no bundle yet, only by the SPIFFE ID its certificate claims.
 */
export type ServerTrust =
  | { readonly kind: 'bundle'; readonly bundle: TrustBundle }
  | { readonly kind: 'insecure'; readonly trustDomain: TrustDomain | undefined };

export interface TransportRequest {
  readonly method: 'GET' | 'POST';
  /** Path and query, e.g. `/agent/v1/sync?revision=3`. */
  readonly path: string;
  readonly body?: unknown;
  readonly trust: ServerTrust;
  readonly credentials?: ClientCredentials | undefined;
  /** Gives up (as unavailable) when no answer arrived within this many milliseconds. */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
}

export interface TransportResponse {
  readonly status: number;
  readonly body: unknown;
  /** The SPIFFE ID the server's certificate carried. */
  readonly serverId: SpiffeId;
}

/** The server could not be reached or authenticated, or answered that it cannot serve now: try another one. */
export class ServerUnavailableError extends Error {
  override readonly name = 'ServerUnavailableError';
}

/** Largest answer read (a full sync of many entries); anything bigger is refused. */
const MAX_RESPONSE_BYTES = 256 * 1024 * 1024;

/**
 * Authenticates the server the SPIFFE way, not by host name: its certificate must be an X509-SVID that chains to
 * our bundle and carries `spiffe://<td>/sigil/server` (SPIRE's agent checks its server the same way). With insecure
 * bootstrap only the ID is checked, which is why it is allowed just for the first attestation.
 */
export async function authenticateServer(chain: readonly Uint8Array[], trust: ServerTrust): Promise<SpiffeId> {
  if (chain.length === 0) throw new ServerUnavailableError('server presented no certificate');
  let id: SpiffeId;
  if (trust.kind === 'bundle') {
    try {
      id = (await verifyX509Svid([...chain], trust.bundle)).spiffeId;
    } catch (error) {
      throw new ServerUnavailableError(`server certificate is not trusted: ${(error as Error).message}`);
    }
  } else {
    try {
      id = idFromCertificate(chain[0] as Uint8Array);
    } catch (error) {
      throw new ServerUnavailableError(`server certificate is not an X509-SVID: ${(error as Error).message}`);
    }
  }
  const trustDomain = trust.kind === 'bundle' ? trust.bundle.trustDomain : (trust.trustDomain ?? id.trustDomain);
  const expected = sigilServerId(trustDomain);
  if (!id.equals(expected)) {
    throw new ServerUnavailableError(
      `server certificate has SPIFFE ID ${id.toString()}, expected ${expected.toString()}`,
    );
  }
  return id;
}

function openTls(
  address: ServerAddress,
  request: TransportRequest,
): Promise<{ socket: TLSSocket; serverId: SpiffeId }> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: address.host,
      port: address.port,
      ...(isIP(address.host) === 0 && { servername: address.host }),
      minVersion: 'TLSv1.3',
      // Verified below with the SPIFFE rules (bundle + server ID), not OpenSSL's host name checks.
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
      ...(request.credentials && {
        cert: request.credentials.certificateChainPem,
        key: request.credentials.privateKeyPem,
      }),
    });
    const onError = (error: Error): void => {
      request.signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(new ServerUnavailableError(`cannot connect to ${address.text}: ${error.message}`));
    };
    const onAbort = (): void => {
      socket.destroy();
      reject(request.signal?.reason);
    };
    request.signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('error', onError);
    socket.setTimeout(request.timeoutMs, () => onError(new Error('TLS handshake timed out')));
    socket.once('secureConnect', () => {
      authenticateServer(peerCertificateChain(socket.getPeerCertificate(true)), request.trust).then(
        (serverId) => {
          request.signal?.removeEventListener('abort', onAbort);
          socket.off('error', onError);
          socket.setTimeout(0);
          resolve({ socket, serverId });
        },
        (error: Error) => {
          request.signal?.removeEventListener('abort', onAbort);
          socket.destroy();
          reject(new ServerUnavailableError(`${address.text}: ${error.message}`));
        },
      );
    });
  });
}

/**
 * One HTTPS request to a server's agent API over TLS 1.3: connects, authenticates the server before sending
 * anything, presents the agent SVID when given, and reads the JSON answer. One connection per request keeps the
 * client certificate current after every renewal; long polls dominate the traffic anyway.
 */
export async function sendRequest(address: ServerAddress, request: TransportRequest): Promise<TransportResponse> {
  request.signal?.throwIfAborted();
  const { socket, serverId } = await openTls(address, request);
  const payload = request.body === undefined ? undefined : Buffer.from(JSON.stringify(request.body));
  if (request.signal?.aborted) {
    socket.destroy();
    throw request.signal.reason;
  }
  return new Promise<TransportResponse>((resolve, reject) => {
    // Why the request was cut short by us, when it was (http reports only "socket hang up").
    let failure: string | undefined;
    let settled = false;
    const finish = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      request.signal?.removeEventListener('abort', onAbort);
      outcome();
    };
    const onAbort = (): void => {
      finish(() => reject(request.signal?.reason));
      outgoing.destroy();
      socket.destroy();
    };
    const outgoing = httpRequest(
      {
        createConnection: () => socket,
        method: request.method,
        path: request.path,
        headers: {
          host: address.text,
          accept: 'application/json',
          connection: 'close',
          ...(payload && { 'content-type': 'application/json', 'content-length': String(payload.length) }),
        },
      },
      (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            failure = `answer larger than ${MAX_RESPONSE_BYTES} bytes`;
            outgoing.destroy();
            return;
          }
          chunks.push(chunk);
        });
        response.once('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = undefined;
          try {
            body = text === '' ? undefined : JSON.parse(text);
          } catch {
            body = { error: 'invalid_response', message: `not JSON: ${text.slice(0, 200)}` };
          }
          socket.destroy();
          finish(() => resolve({ status: response.statusCode ?? 0, body, serverId }));
        });
        response.once('error', (error) =>
          finish(() => reject(new ServerUnavailableError(`${address.text}: ${failure ?? error.message}`))),
        );
      },
    );
    // http applies no timeout to a socket it did not create itself.
    socket.setTimeout(request.timeoutMs, () => {
      failure = `no answer within ${request.timeoutMs} ms`;
      outgoing.destroy();
    });
    outgoing.once('error', (error) => {
      socket.destroy();
      const reason = failure ?? error.message;
      finish(() => reject(new ServerUnavailableError(`${address.text}: ${reason}`)));
    });
    request.signal?.addEventListener('abort', onAbort, { once: true });
    outgoing.end(payload);
  });
}
