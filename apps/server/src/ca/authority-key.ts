import type { CaKeyType } from '../config.js';
import type { AuthorityTransition } from './authority-metrics.js';
import type { AuthorityKind, CaKeyEntity, CaKeyState } from './ca-key.entity.js';

/** A journal key as the rest of the server sees it: public parts only. */
export interface AuthorityKey {
  readonly id: string;
  readonly kind: AuthorityKind;
  readonly state: CaKeyState;
  readonly tainted: boolean;
  readonly revoked: boolean;
  readonly keyType: CaKeyType;
  /** The X.509 CA certificate's subject key identifier (hex), or the JWT key's `kid`. */
  readonly authorityId: string;
  readonly publicKeyDer: Buffer;
  /** The CA certificate (X.509 keys only). */
  readonly certificateDer: Buffer | null;
  /** Upstream mode: the upstream certificates above ours, the upstream root last; empty otherwise. */
  readonly upstreamChainDer: readonly Buffer[];
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly createdAt: Date;
  readonly activatedAt: Date | null;
}

/** One change of the journal, as logged and counted. */
export interface AuthorityChange {
  readonly kind: AuthorityKind;
  readonly transition: AuthorityTransition;
  readonly authorityId: string;
}

export function toAuthorityKey(row: CaKeyEntity): AuthorityKey {
  return {
    id: row.id,
    kind: row.kind,
    state: row.state,
    tainted: row.tainted,
    revoked: row.revoked,
    keyType: row.keyType,
    authorityId: row.authorityId,
    publicKeyDer: row.publicKeyDer,
    certificateDer: row.certificateDer,
    upstreamChainDer: (row.upstreamChain ?? []).map((der) => Buffer.from(der, 'base64')),
    notBefore: row.notBefore,
    notAfter: row.notAfter,
    createdAt: row.createdAt,
    activatedAt: row.activatedAt,
  };
}
