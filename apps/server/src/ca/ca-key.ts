import type { CaKeyType } from '../config.js';

/** The two authorities the server runs: the X.509 CA and the JWT signing key. */
export type AuthorityKind = 'x509' | 'jwt';
/** SPIRE's key states: published but not signing, signing, and retired but still published until it expires. */
export type CaKeyState = 'prepared' | 'active' | 'old';

/** One key of the CA key journal, as the key manager works on it. Its private key is sealed with the KEK. */
export interface CaKey {
  readonly id: string;
  readonly kind: AuthorityKind;
  readonly state: CaKeyState;
  readonly tainted: boolean;
  readonly revoked: boolean;
  readonly keyType: CaKeyType;
  /** SPIRE's authority id: the CA certificate's subject key identifier (hex) or the JWT key's `kid`. */
  readonly authorityId: string;
  /** PKCS#8 DER sealed by the key-encryption key, bound to `ca_keys/<id>/<kind>`. */
  readonly encryptedPrivateKey: Buffer;
  /** SubjectPublicKeyInfo DER. */
  readonly publicKeyDer: Buffer;
  /** The CA certificate (X.509 keys only): self-signed, or an intermediate signed by the upstream CA. */
  readonly certificateDer: Buffer | null;
  /** Upstream mode: base64 DER of the upstream certificates above ours, the upstream root last. */
  readonly upstreamChain: readonly string[] | null;
  /**
   * Upstream authority sigil: base64 DER of the upstream trust bundle's X.509 authorities, as the upstream server
   * returned them when this key was signed and then as the local agent's Workload API last delivered them (kept in
   * step on every such key), published in our bundle while the key is; null otherwise.
   */
  readonly upstreamAuthorities: readonly string[] | null;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly createdAt: Date;
  readonly activatedAt: Date | null;
  /** Changes on every write of the key; a decimal string (a bigint). */
  readonly revision: string;
}
