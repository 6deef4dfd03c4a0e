import { type TLSSocket } from 'node:tls';
import {
  SpiffeError,
  peerCertificateChain,
  verifyX509SvidSync,
  type TrustBundle,
  nodeCertificateFromDer,
} from '@sigil/spiffe';
import { CheckedChains } from '../agent-api/checked-chains.js';
import { AppError } from '../common/errors.js';

/** An X509-SVID a TLS client presented that verified against our bundle. */
export interface PresentedSvid {
  readonly spiffeId: string;
  /** Lowercase hex serial number of the leaf. */
  readonly serialNumber: string;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  /** The bundle sequence it verified against: a bundle change verifies it again. */
  readonly bundleSequence: number;
}

/** Lowercase hex serial number of a DER certificate, as agent records store it. */
export function serialNumberOf(der: Uint8Array): string {
  return nodeCertificateFromDer(der).serialNumber.toLowerCase();
}

/** A 401 about the client certificate. */
export const unauthenticatedClient = (message: string): AppError =>
  new AppError('unauthenticated', `client certificate: ${message}`);

/**
 * Verifies the X509-SVID a TLS client presented against our own bundle, for the mTLS callers of both APIs (agents on
 * the agent API, admin workloads on the admin API), so both hold the same rule: the chain must verify at the clock's
 * time against the bundle's X.509 authorities, and the leaf be valid now. A connection carries one client
 * certificate, so it is verified once per connection and bundle sequence; chains seen on other connections are
 * remembered (bounded) while every certificate of theirs is valid. Throws 401 (`client certificate: …`).
 */
export class ClientSvidVerifier {
  private readonly connections = new WeakMap<TLSSocket, PresentedSvid>();
  private readonly chains: CheckedChains<PresentedSvid>;

  /**
   * @param label What the SVID is called in messages (`agent SVID`).
   * @param missing The message when the client presented no certificate.
   */
  constructor(
    maxChains: number,
    private readonly label: string,
    private readonly missing: string,
  ) {
    this.chains = new CheckedChains(maxChains);
  }

  /** True when the client presented a certificate at all. */
  static presentsCertificate(socket: TLSSocket): boolean {
    return peerCertificateChain(socket.getPeerCertificate(true)).length > 0;
  }

  /** The verified SVID of `socket`'s client, valid at `now`. */
  verify(socket: TLSSocket, bundle: TrustBundle, now: Date): PresentedSvid {
    const svid = this.verifiedChain(socket, bundle, now);
    if (now.getTime() > svid.notAfterMs) {
      throw unauthenticatedClient(`${this.label} expired at ${new Date(svid.notAfterMs).toISOString()}`);
    }
    if (now.getTime() < svid.notBeforeMs) {
      throw unauthenticatedClient(`${this.label} is not valid before ${new Date(svid.notBeforeMs).toISOString()}`);
    }
    return svid;
  }

  private verifiedChain(socket: TLSSocket, bundle: TrustBundle, now: Date): PresentedSvid {
    const bundleSequence = bundle.sequenceNumber ?? 0;
    const cached = this.connections.get(socket);
    if (cached?.bundleSequence === bundleSequence) return cached;

    const chain = peerCertificateChain(socket.getPeerCertificate(true));
    if (chain.length === 0) throw unauthenticatedClient(this.missing);
    const verify = () => {
      let verified;
      let verifiedChain;
      try {
        verified = verifyX509SvidSync(chain, bundle, { now });
        verifiedChain = verified.verifiedChain;
      } catch (error) {
        if (error instanceof SpiffeError) throw unauthenticatedClient(error.message);
        throw error;
      }
      const leaf = verifiedChain[0]!;
      return {
        value: {
          spiffeId: verified.spiffeId.toString(),
          serialNumber: serialNumberOf(chain[0]!),
          notBeforeMs: leaf.notBefore.getTime(),
          notAfterMs: leaf.notAfter.getTime(),
          bundleSequence,
        },
        validFromMs: Math.max(...verifiedChain.map((cert) => cert.notBefore.getTime())),
        validUntilMs: Math.min(...verifiedChain.map((cert) => cert.notAfter.getTime())),
      };
    };
    const svid = this.chains.get(chain, now.getTime(), verify, String(bundleSequence));
    this.connections.set(socket, svid);
    return svid;
  }
}
