import type { AuthorityTransition } from './authority-metrics.js';
import type { AuthorityKind, CaKey } from './ca-key.js';

/** A journal key as the rest of the server sees it: public parts only (no sealed private key). */
export interface AuthorityKey extends Pick<
  CaKey,
  | 'id'
  | 'kind'
  | 'state'
  | 'tainted'
  | 'revoked'
  | 'keyType'
  | 'authorityId'
  | 'publicKeyDer'
  | 'certificateDer'
  | 'notBefore'
  | 'notAfter'
  | 'createdAt'
  | 'activatedAt'
> {
  /** Upstream mode: the upstream certificates above ours, the upstream root last; empty otherwise. */
  readonly upstreamChainDer: readonly Buffer[];
}

/** One change of the journal, as logged and counted. */
export interface AuthorityChange {
  readonly kind: AuthorityKind;
  readonly transition: AuthorityTransition;
  readonly authorityId: string;
}

export function toAuthorityKey(row: CaKey): AuthorityKey {
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
