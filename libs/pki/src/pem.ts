import { type webcrypto } from 'node:crypto';
import { decodePemBlocks, encodePemBlock, isPemLabel, type PemBlock } from '@sigil/spiffe';
import { PkiError } from './errors.js';
import { exportPrivateKeyPkcs8, importPrivateKeyPkcs8, type KeyType } from './keys.js';
// Types only: the signing workers load this module and must not load @peculiar/x509 (pem-certificates.ts parses).
import type { x509 } from './x509-lib.js';

export type { PemBlock };

/** PEM labels used by Sigil. */
export const PEM_LABEL = {
  certificate: 'CERTIFICATE',
  certificateRequest: 'CERTIFICATE REQUEST',
  privateKey: 'PRIVATE KEY',
  publicKey: 'PUBLIC KEY',
} as const;

function pemError(message: string): PkiError {
  return new PkiError('ERR_PEM_INVALID', message);
}

/** Encodes DER bytes as one PEM block with 64-character lines (RFC 7468 §2), ending in a newline. */
export function toPem(label: string, der: Uint8Array): string {
  if (!isPemLabel(label)) {
    throw pemError(`label: must be uppercase words of letters and digits separated by single spaces`);
  }
  if (!(der instanceof Uint8Array) || der.length === 0) throw pemError('der: must be a non-empty Uint8Array');
  return encodePemBlock(label, der);
}

/**
 * Decodes every PEM block of a text with the one PEM codec of @sigil/spiffe ({@link decodePemBlocks}), strictly:
 * BEGIN and END labels must match, blocks must not nest or be left open, the body must be canonical base64 with no
 * headers, and any other line starting with `-----` is an error. Explanatory text between blocks is ignored
 * (RFC 7468 §2).
 *
 * @throws PkiError `ERR_PEM_INVALID` naming the line and rule; also when there is no block at all.
 */
export function pemBlocks(pem: string): PemBlock[] {
  if (typeof pem !== 'string') throw pemError('pem: must be a string');
  const blocks = decodePemBlocks(pem);
  if (typeof blocks === 'string') throw pemError(blocks);
  if (blocks.length === 0) throw pemError('pem: no pem block found');
  return blocks;
}

/** Decodes a PEM text that must hold exactly one block, with the given label. */
export function singlePemBlock(pem: string, label: string, field = 'pem'): Uint8Array {
  const blocks = pemBlocks(pem);
  if (blocks.length !== 1) throw pemError(`${field}: expected one "${label}" block, found ${blocks.length} blocks`);
  const [block] = blocks as [PemBlock];
  if (block.label !== label) throw pemError(`${field}: expected label "${label}", found "${block.label}"`);
  return block.der;
}

/** Encodes certificates (parsed, or DER bytes) as consecutive "CERTIFICATE" PEM blocks, in the given order. */
export function certificatesToPem(certificates: readonly (x509.X509Certificate | Uint8Array)[]): string {
  return certificates
    .map((certificate) =>
      toPem(
        PEM_LABEL.certificate,
        certificate instanceof Uint8Array ? certificate : new Uint8Array(certificate.rawData),
      ),
    )
    .join('');
}

/** Encodes a private key as an unencrypted PKCS#8 "PRIVATE KEY" PEM block (RFC 7468 §10). */
export function privateKeyToPem(key: webcrypto.CryptoKey): string {
  return toPem(PEM_LABEL.privateKey, exportPrivateKeyPkcs8(key));
}

/**
 * Imports a private key from a PEM text holding exactly one PKCS#8 "PRIVATE KEY" block; see
 * {@link importPrivateKeyPkcs8}.
 */
export async function privateKeyFromPem(pem: string, keyType?: KeyType): Promise<webcrypto.CryptoKey> {
  return importPrivateKeyPkcs8(singlePemBlock(pem, PEM_LABEL.privateKey, 'privateKey'), keyType);
}
