/**
 * The per-CSR work of workload X.509-SVID signing, in one place for the server's event loop and its signing workers
 * (`signing-pool.ts`): parse the CSR and verify its signature, check that it asks for no SPIFFE ID but the entry's,
 * then sign a leaf for its key with the entry's SPIFFE ID, DNS names and lifetime.
 */
import { SpiffeError, SpiffeId } from '@sigil/spiffe';
import { parseCsrFastAsync } from './csr-parser.js';
import { PkiError } from './errors.js';
import type { SvidLeafSigner } from './svid-leaf-signer.js';

/** One CSR to sign for an entry the caller has already authorised. */
export interface CsrToSign {
  /** The PKCS#10 CSR (PEM or DER); its self-signature is verified and only its public key is used. */
  readonly csr: string | Uint8Array;
  /** The entry's SPIFFE ID as stored: a URI SAN of the CSR must name exactly it. */
  readonly entrySpiffeId: string;
  /** Whether {@link entrySpiffeId} is in canonical form (the caller parsed it): lets an equal URI SAN skip a parse. */
  readonly entrySpiffeIdCanonical: boolean;
  /** The leaf's SPIFFE ID (the entry's, canonical), already checked to be in the CA's trust domain. */
  readonly spiffeId: string;
  readonly dnsNames: readonly string[];
  /** The leaf's lifetime, already capped by the CA's remaining life. */
  readonly ttlSeconds: number;
  /** The request field named in error messages, e.g. `csrs.3.csr`. */
  readonly field: string;
}

/** The signed leaf (DER), or why this CSR was refused (an `invalid_argument` message naming the field). */
export type CsrSigningOutcome =
  { readonly ok: true; readonly leafDer: Uint8Array } | { readonly ok: false; readonly message: string };

/**
 * Why a CSR asking for the URI SANs `uris` must not get `spiffeId`, or undefined when it may (no URI SAN, or one
 * naming `spiffeId`, compared in canonical form). `canonical`: the caller knows `spiffeId` is canonical, so a URI
 * SAN of the very same text needs no parse.
 */
export function requestedIdProblem(uris: readonly string[], spiffeId: string, canonical = false): string | undefined {
  if (uris.length === 0) return undefined;
  if (canonical && uris.length === 1 && uris[0] === spiffeId) return undefined;
  let requested: string | undefined;
  try {
    requested = uris.length === 1 ? SpiffeId.parse(uris[0]!).toString() : undefined;
  } catch {
    requested = undefined;
  }
  if (requested === spiffeId) return undefined;
  return `uri san ${JSON.stringify(uris.join(', '))} does not match the spiffe id ${spiffeId}`;
}

/** Parsed SPIFFE IDs of the leaves, kept across calls (entries are signed again and again); bounded. */
export class SpiffeIdCache {
  readonly #ids = new Map<string, SpiffeId>();

  constructor(private readonly max = 10_000) {}

  get(text: string): SpiffeId {
    let id = this.#ids.get(text);
    if (id === undefined) {
      id = SpiffeId.parse(text);
      if (this.#ids.size >= this.max) this.#ids.clear();
      this.#ids.set(text, id);
    }
    return id;
  }
}

async function signOne(
  signer: SvidLeafSigner,
  now: Date,
  item: CsrToSign,
  ids: SpiffeIdCache,
): Promise<CsrSigningOutcome> {
  let parsed;
  try {
    parsed = await parseCsrFastAsync(item.csr);
  } catch (error) {
    if (error instanceof PkiError) return { ok: false, message: `${item.field}: ${error.message}` };
    throw error;
  }
  const problem = requestedIdProblem(parsed.uris, item.entrySpiffeId, item.entrySpiffeIdCanonical);
  if (problem !== undefined) return { ok: false, message: `${item.field}: ${problem}` };
  const spiffeId = ids.get(item.spiffeId);
  try {
    const leafDer = signer.sign({
      spiffeId,
      spkiDer: parsed.spkiDer,
      dnsNames: item.dnsNames,
      ttlSeconds: item.ttlSeconds,
      now,
    });
    return { ok: true, leafDer };
  } catch (error) {
    if (error instanceof PkiError || error instanceof SpiffeError)
      return { ok: false, message: `spkiDer: ${error.message}` };
    throw error;
  }
}

/**
 * Signs each CSR with `signer` at `now`: every CSR's key import is started, then all are awaited together (one
 * asynchronous step for the lot). A CSR that is refused gets its message and the others go on; anything else
 * (a bug) rejects the whole call.
 */
export function signCsrs(
  signer: SvidLeafSigner,
  now: Date,
  items: readonly CsrToSign[],
  ids: SpiffeIdCache,
): Promise<CsrSigningOutcome[]> {
  return Promise.all(items.map((item) => signOne(signer, now, item, ids)));
}
