/** A JWT authority as stored: its `kid` and the public parameters of its key as a JWK (kty, crv/x/y or n/e). */
export interface StoredJwtAuthority {
  readonly kid: string;
  readonly jwk: Readonly<Record<string, string>>;
}

/** The stored trust bundle of one trust domain: ours (kept by the key manager) or a federated one. */
export interface StoredBundle {
  readonly trustDomain: string;
  /** Base64 DER of each X.509 authority (root CA certificate). */
  readonly x509Authorities: readonly string[];
  readonly jwtAuthorities: readonly StoredJwtAuthority[];
  /** Authority IDs of our tainted keys (X.509 subject key identifier hex, JWT kid); none in a federated bundle. */
  readonly taintedAuthorities?: readonly string[];
  readonly refreshHintSeconds: number | null;
  /** `spiffe_sequence`: increases by one on every change, never reused; a decimal string (a bigint). */
  readonly sequence: string;
  readonly updatedAt: Date;
}
