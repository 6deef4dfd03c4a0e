import { generateKeyPairSync } from 'node:crypto';
import { type Server as TlsServer } from 'node:tls';
import { Logger } from '@nestjs/common';
import { certificatesToPem } from '@sigil/pki';
import { sigilServerId } from '@sigil/runtime';
import { type SpiffeId, type TrustDomain } from '@sigil/spiffe';
import { type BundleService } from '../bundle/bundle.service.js';
import { type CaService } from '../ca/ca.service.js';
import { type Clock } from './clock.js';

/** What the TCP listener presents and trusts. */
export interface ServerCredentials {
  /** The server's X509-SVID chain (`spiffe://<td>/sigil/server`), leaf first. */
  certificateChainPem: string;
  privateKeyPem: string;
  /** Our trust bundle's X.509 authorities, to check the client certificates of mTLS callers (agents); absent: none. */
  trustBundlePem?: string;
  notAfter: Date;
}

/** Where the listener's credentials come from; the CA in production, a fixed pair in tests of the refresher. */
export interface ServerCredentialSource {
  issue(): Promise<ServerCredentials>;
}

/** Issues the server's X509-SVID from our own CA, with a fresh key each time (the key never leaves memory). */
export class CaServerCredentialSource implements ServerCredentialSource {
  private readonly spiffeId: SpiffeId;

  constructor(
    private readonly ca: CaService,
    private readonly bundle: BundleService,
    trustDomain: TrustDomain,
  ) {
    this.spiffeId = sigilServerId(trustDomain);
  }

  issue(): Promise<ServerCredentials> {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const signed = this.ca.signX509Svid({
      spiffeId: this.spiffeId,
      spkiDer: publicKey.export({ type: 'spki', format: 'der' }),
    });
    return Promise.resolve({
      certificateChainPem: certificatesToPem(signed.certificateChainDer),
      privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      trustBundlePem: this.bundle.ownPem(),
      notAfter: signed.expiresAt,
    });
  }
}

const MAX_REFRESH_MS = 60_000;
const RETRY_MS = 5_000;

/**
 * Keeps a TLS server's certificate fresh: a new SVID at half of the current one's remaining life, and at least
 * every minute so a newly prepared CA in the bundle reaches the client-certificate trust list promptly. Handshakes
 * in flight keep the context they started with (`setSecureContext`).
 */
export class ServerTlsRefresher {
  private readonly logger = new Logger('ServerTls');
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly server: TlsServer,
    private readonly source: ServerCredentialSource,
    private readonly clock: Clock,
    private readonly minVersion: 'TLSv1.2' | 'TLSv1.3' = 'TLSv1.3',
  ) {}

  /** Installs the first credentials; throws if they cannot be issued (the server must not listen without them). */
  async start(): Promise<ServerCredentials> {
    const credentials = await this.install();
    this.logger.log({ msg: 'server TLS certificate installed', notAfter: credentials.notAfter.toISOString() });
    return credentials;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /**
   * Issues new credentials now (the CA keys changed: a key activated, tainted or revoked), so the server never
   * presents a certificate from a key that is about to leave the bundle; a failure retries as a refresh does.
   */
  refreshNow(): void {
    this.schedule(0);
  }

  private async install(): Promise<ServerCredentials> {
    const credentials = await this.source.issue();
    this.server.setSecureContext({
      cert: credentials.certificateChainPem,
      key: credentials.privateKeyPem,
      ...(credentials.trustBundlePem !== undefined && { ca: credentials.trustBundlePem }),
      minVersion: this.minVersion,
    });
    const halfLife = (credentials.notAfter.getTime() - this.clock.now().getTime()) / 2;
    this.schedule(Math.max(1000, Math.min(halfLife, MAX_REFRESH_MS)));
    return credentials;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.install().catch((error: unknown) => {
        this.logger.warn({ msg: 'server TLS certificate refresh failed; retrying', err: error });
        this.schedule(RETRY_MS);
      });
    }, delayMs);
    this.timer.unref();
  }
}
