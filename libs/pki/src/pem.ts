import { type webcrypto } from 'node:crypto';
import { DerCursor } from './der-reader.js';
import { DerTag } from './der-tags.js';
import { PkiError, messageOf } from './errors.js';
import { exportPrivateKeyPkcs8, importPrivateKeyPkcs8, type KeyType } from './keys.js';
import { x509 } from './x509-lib.js';

/** One decoded PEM block (RFC 7468): its label and DER bytes. */
export interface PemBlock {
  readonly label: string;
  readonly der: Uint8Array;
}

/** PEM labels used by Sigil. */
export const PEM_LABEL = {
  certificate: 'CERTIFICATE',
  certificateRequest: 'CERTIFICATE REQUEST',
  privateKey: 'PRIVATE KEY',
  publicKey: 'PUBLIC KEY',
} as const;

const LABEL = /^[A-Z0-9]+(?: [A-Z0-9]+)*$/;
const BEGIN = /^-----BEGIN (.*)-----$/;
const END = /^-----END (.*)-----$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const LINE_LENGTH = 64;

function pemError(message: string): PkiError {
  return new PkiError('ERR_PEM_INVALID', message);
}

/** Encodes DER bytes as one PEM block with 64-character lines (RFC 7468 §2), ending in a newline. */
export function toPem(label: string, der: Uint8Array): string {
  if (typeof label !== 'string' || !LABEL.test(label)) {
    throw pemError(`label: must be uppercase words of letters and digits separated by single spaces`);
  }
  if (!(der instanceof Uint8Array) || der.length === 0) throw pemError('der: must be a non-empty Uint8Array');
  const base64 = Buffer.from(der).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < base64.length; i += LINE_LENGTH) lines.push(base64.slice(i, i + LINE_LENGTH));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/**
 * Decodes every PEM block of a text, strictly: BEGIN and END labels must match, blocks must not nest or be left
 * open, the body must be canonical base64 with no headers, and any other line starting with `-----` is an error.
 * Explanatory text between blocks is ignored (RFC 7468 §2).
 *
 * @throws PkiError `ERR_PEM_INVALID` naming the line and rule; also when there is no block at all.
 */
export function pemBlocks(pem: string): PemBlock[] {
  if (typeof pem !== 'string') throw pemError('pem: must be a string');
  const blocks: PemBlock[] = [];
  let open: { label: string; line: number; body: string[] } | undefined;
  const lines = pem.split(/\r?\n/);
  for (const [index, raw] of lines.entries()) {
    const line = raw.trim();
    const lineNumber = index + 1;
    const begin = BEGIN.exec(line);
    const end = END.exec(line);
    if (open === undefined) {
      if (begin) {
        if (!LABEL.test(begin[1]!)) throw pemError(`pem line ${lineNumber}: invalid label ${JSON.stringify(begin[1])}`);
        open = { label: begin[1]!, line: lineNumber, body: [] };
      } else if (line.startsWith('-----')) {
        throw pemError(`pem line ${lineNumber}: ${end ? 'END without a matching BEGIN' : 'malformed boundary line'}`);
      }
      continue;
    }
    if (end) {
      if (end[1] !== open.label) {
        throw pemError(`pem line ${lineNumber}: END label "${end[1]}" does not match BEGIN label "${open.label}"`);
      }
      blocks.push({ label: open.label, der: decodeBody(open.body.join(''), open.label, open.line) });
      open = undefined;
    } else if (begin) {
      throw pemError(`pem line ${lineNumber}: BEGIN inside the "${open.label}" block opened on line ${open.line}`);
    } else if (line.startsWith('-----')) {
      throw pemError(`pem line ${lineNumber}: malformed boundary line`);
    } else {
      open.body.push(line);
    }
  }
  if (open !== undefined) throw pemError(`pem: "${open.label}" block opened on line ${open.line} has no END line`);
  if (blocks.length === 0) throw pemError('pem: no pem block found');
  return blocks;
}

function decodeBody(body: string, label: string, line: number): Uint8Array {
  const where = `pem "${label}" block on line ${line}`;
  if (body.length === 0) throw pemError(`${where}: body is empty`);
  if (body.includes(':')) throw pemError(`${where}: headers are not allowed`);
  if (!BASE64.test(body) || body.length % 4 !== 0) throw pemError(`${where}: body is not valid base64`);
  const der = Buffer.from(body, 'base64');
  if (der.toString('base64') !== body) throw pemError(`${where}: body is not canonical base64`);
  return new Uint8Array(der);
}

/** Decodes a PEM text that must hold exactly one block, with the given label. */
export function singlePemBlock(pem: string, label: string, field = 'pem'): Uint8Array {
  const blocks = pemBlocks(pem);
  if (blocks.length !== 1) throw pemError(`${field}: expected one "${label}" block, found ${blocks.length} blocks`);
  const [block] = blocks as [PemBlock];
  if (block.label !== label) throw pemError(`${field}: expected label "${label}", found "${block.label}"`);
  return block.der;
}

/**
 * Parses one DER certificate, refusing trailing data.
 *
 * @throws PkiError `ERR_CERTIFICATE_INVALID` naming `field`.
 */
export function certificateFromDer(der: Uint8Array, field = 'certificate'): x509.X509Certificate {
  if (!(der instanceof Uint8Array)) throw new PkiError('ERR_CERTIFICATE_INVALID', `${field}: must be a Uint8Array`);
  const top = DerCursor.over(der, { name: field, code: 'ERR_CERTIFICATE_INVALID' });
  top.expect(DerTag.SEQUENCE, 'certificate');
  top.finish('the input (one certificate)');
  try {
    return new x509.X509Certificate(der.slice());
  } catch (error) {
    throw new PkiError('ERR_CERTIFICATE_INVALID', `${field}: not a valid der certificate: ${messageOf(error)}`, {
      cause: error,
    });
  }
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

/**
 * Parses every block of a PEM text as a certificate; every block must be labelled "CERTIFICATE".
 *
 * @throws PkiError `ERR_PEM_INVALID` for PEM errors, `ERR_CERTIFICATE_INVALID` for a block that is not a certificate.
 */
export function certificatesFromPem(pem: string): x509.X509Certificate[] {
  return pemBlocks(pem).map((block, index) => {
    if (block.label !== PEM_LABEL.certificate) {
      throw pemError(`pem block ${index}: expected label "${PEM_LABEL.certificate}", found "${block.label}"`);
    }
    return certificateFromDer(block.der, `certificates[${index}]`);
  });
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
