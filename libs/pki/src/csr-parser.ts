/**
 * Sigil's one PKCS#10 (RFC 2986) parser: it reads an untrusted certificate signing request with the defensive DER
 * reader, verifies its self-signature with Node's `crypto.verify`, and returns the verified public key with the URI
 * and DNS names the request asks for. It accepts strictly less than @peculiar/x509 does (the specs and the CSR fuzz
 * target check that against the reference parser in test/support/pki-reference).
 */
import { verify, type KeyObject } from 'node:crypto';
import {
  checkDerStructure,
  decodeDerIa5String,
  decodeDerOid,
  derBytes,
  derContent,
  DerCursor,
  type DerContext,
  type DerElement,
} from './der-reader.js';
import { DerTag } from './der-tags.js';
import { messageOf, PkiError } from './errors.js';
import type { KeyType } from './keys.js';
import { ALGORITHM_IDENTIFIERS, Oid } from './oids.js';
import { PEM_LABEL, singlePemBlock } from './pem.js';
import { importSpkiFast, importSpkiFastAsync } from './spki.js';

/** Largest CSR accepted, PEM or DER: a real SVID request is well under 2 KiB, even with an RSA key. */
export const CSR_MAX_BYTES = 16 * 1024;

/** What {@link parseCsrFast} returns: the request's verified public key and the names it asks for. */
export interface FastParsedCsr {
  /** The SubjectPublicKeyInfo exactly as encoded in the request (a copy), already checked to be canonical DER. */
  readonly spkiDer: Buffer;
  /** The public key, whose private half produced the request's signature. */
  readonly publicKey: KeyObject;
  /** URI names of the request's subjectAltName extension, in order. */
  readonly uris: string[];
  /** DNS names of the request's subjectAltName extension, in order. */
  readonly dnsNames: string[];
}

const CONTEXT: DerContext = { name: 'csr', code: 'ERR_CSR_INVALID' };
function invalid(rule: string, cause?: unknown): PkiError {
  return new PkiError('ERR_CSR_INVALID', `csr: ${rule}`, cause === undefined ? undefined : { cause });
}

function toDer(pemOrDer: string | Uint8Array): Uint8Array {
  if (typeof pemOrDer === 'string') {
    if (pemOrDer.length > CSR_MAX_BYTES) throw invalid(`input must be at most ${CSR_MAX_BYTES} bytes`);
    try {
      return singlePemBlock(pemOrDer, PEM_LABEL.certificateRequest, 'csr');
    } catch (error) {
      throw new PkiError('ERR_CSR_INVALID', messageOf(error), { cause: error });
    }
  }
  if (!(pemOrDer instanceof Uint8Array)) throw invalid('input must be a pem string or der bytes');
  if (pemOrDer.length > CSR_MAX_BYTES) throw invalid(`input must be at most ${CSR_MAX_BYTES} bytes`);
  return pemOrDer;
}

/** Which signature algorithm an AlgorithmIdentifier names, by its exact DER (parameters included). */
function signatureHash(der: Uint8Array): { hash: 'sha256' | 'sha384'; keyType: 'ec' | 'rsa' } {
  const bytes = Buffer.from(der.buffer, der.byteOffset, der.length);
  if (bytes.equals(ALGORITHM_IDENTIFIERS.ecdsaWithSha256)) return { hash: 'sha256', keyType: 'ec' };
  if (bytes.equals(ALGORITHM_IDENTIFIERS.ecdsaWithSha384)) return { hash: 'sha384', keyType: 'ec' };
  if (bytes.equals(ALGORITHM_IDENTIFIERS.sha256WithRsaEncryption)) return { hash: 'sha256', keyType: 'rsa' };
  throw invalid(
    'signatureAlgorithm must be ecdsa-with-SHA256, ecdsa-with-SHA384 (no parameters) or sha256WithRSAEncryption (NULL parameters)',
  );
}

/** Reads `[0] IMPLICIT SET OF Attribute` and returns the subjectAltName names of the extensionRequest, if any. */
function readAttributes(buf: Uint8Array, cursor: DerCursor, attributes: DerElement): { uris: string[]; dns: string[] } {
  const names = { uris: [] as string[], dns: [] as string[] };
  const list = cursor.enter(attributes, 'attributes');
  let sawExtensionRequest = false;
  while (!list.isDone) {
    const attribute = list.expect(DerTag.SEQUENCE, 'attribute');
    const fields = list.enter(attribute, 'attribute');
    const type = decodeDerOid(buf, fields.expect(DerTag.OBJECT_IDENTIFIER, 'attribute type'), CONTEXT);
    const values = fields.expect(DerTag.SET, 'attribute values');
    fields.finish('attribute');
    if (type !== Oid.extensionRequest) continue;
    if (sawExtensionRequest) throw invalid('extensionRequest attribute must appear at most once');
    sawExtensionRequest = true;
    const valueList = fields.enter(values, 'extensionRequest values');
    const extensions = valueList.expect(DerTag.SEQUENCE, 'extensionRequest extensions');
    valueList.finish('extensionRequest values (exactly one value)');
    readExtensions(buf, valueList, extensions, names);
  }
  return names;
}

function readExtensions(
  buf: Uint8Array,
  parent: DerCursor,
  extensions: DerElement,
  names: { uris: string[]; dns: string[] },
): void {
  const list = parent.enter(extensions, 'extensions');
  const seen = new Set<string>();
  while (!list.isDone) {
    const fields = list.enter(list.expect(DerTag.SEQUENCE, 'extension'), 'extension');
    const id = decodeDerOid(buf, fields.expect(DerTag.OBJECT_IDENTIFIER, 'extension id'), CONTEXT);
    if (seen.has(id)) throw invalid(`extension ${id} must appear at most once`);
    seen.add(id);
    const critical = fields.optional(DerTag.BOOLEAN, 'extension critical flag');
    if (critical) {
      const value = derContent(buf, critical);
      if (value.length !== 1 || (value[0] !== 0 && value[0] !== 0xff)) {
        throw invalid(`extension ${id} critical flag must be a one-byte boolean (0x00 or 0xff)`);
      }
    }
    const value = fields.expect(DerTag.OCTET_STRING, 'extension value');
    fields.finish('extension');
    if (id === Oid.subjectAltName) readSubjectAltName(buf, value, names);
  }
}

function readSubjectAltName(buf: Uint8Array, value: DerElement, names: { uris: string[]; dns: string[] }): void {
  // The extension value is DER of its own, inside an OCTET STRING: check it fully before reading it.
  checkDerStructure(buf, CONTEXT, { start: value.contentStart, end: value.end });
  const outer = DerCursor.over(buf, CONTEXT, { start: value.contentStart, end: value.end });
  const generalNames = outer.expect(DerTag.SEQUENCE, 'subjectAltName');
  outer.finish('subjectAltName extension value');
  const list = outer.enter(generalNames, 'subjectAltName');
  if (list.isDone) throw invalid('subjectAltName must hold at least one name');
  while (!list.isDone) {
    const name = list.next('general name');
    if (name.tag === 0x86) names.uris.push(decodeDerIa5String(buf, name, CONTEXT));
    else if (name.tag === 0x82) names.dns.push(decodeDerIa5String(buf, name, CONTEXT));
  }
}

/** A request whose structure was read: the parts the key import and the signature check need. */
interface ReadCsr {
  readonly der: Uint8Array;
  readonly info: DerElement;
  readonly spki: Uint8Array;
  readonly hash: 'sha256' | 'sha384';
  readonly keyType: 'ec' | 'rsa';
  readonly signature: Uint8Array;
  readonly names: { uris: string[]; dns: string[] };
}

/** Everything before the key import: PEM, strict DER, version, algorithms, names. */
function readCsr(pemOrDer: string | Uint8Array): ReadCsr {
  const der = toDer(pemOrDer);
  const top = DerCursor.over(der, CONTEXT);
  const request = top.expect(DerTag.SEQUENCE, 'CertificationRequest');
  top.finish('the input (one CertificationRequest)');
  checkDerStructure(der, CONTEXT);

  const requestFields = top.enter(request, 'CertificationRequest');
  const info = requestFields.expect(DerTag.SEQUENCE, 'certificationRequestInfo');
  const algorithm = requestFields.expect(DerTag.SEQUENCE, 'signatureAlgorithm');
  const signature = requestFields.expect(DerTag.BIT_STRING, 'signature');
  requestFields.finish('CertificationRequest');

  const infoFields = requestFields.enter(info, 'certificationRequestInfo');
  const version = infoFields.expect(DerTag.INTEGER, 'version');
  const versionBytes = derContent(der, version);
  if (versionBytes.length !== 1 || versionBytes[0] !== 0) throw invalid('version must be 0 (v1)');
  infoFields.expect(DerTag.SEQUENCE, 'subject');
  const spki = infoFields.expect(DerTag.SEQUENCE, 'subjectPKInfo');
  const attributes = infoFields.expect(DerTag.CONTEXT_0_CONSTRUCTED, 'attributes');
  infoFields.finish('certificationRequestInfo');

  const { hash, keyType } = signatureHash(derBytes(der, algorithm));
  const signatureBytes = derContent(der, signature);
  if (signatureBytes.length < 2 || signatureBytes[0] !== 0) {
    throw invalid('signature must be a non-empty bit string with no unused bits');
  }

  const names = readAttributes(der, infoFields, attributes);
  return { der, info, spki: derBytes(der, spki), hash, keyType, signature: signatureBytes.subarray(1), names };
}

/** Checks the imported key suits the signature algorithm and verifies the self-signature with it. */
function verifiedCsr(csr: ReadCsr, imported: { keyType: KeyType; keyObject: KeyObject }): FastParsedCsr {
  if (!imported.keyType.startsWith(csr.keyType)) {
    throw invalid(`signatureAlgorithm is for ${csr.keyType} keys but the public key is ${imported.keyType}`);
  }
  const publicKey = imported.keyObject;
  let valid: boolean;
  try {
    valid = verify(csr.hash, derBytes(csr.der, csr.info), { key: publicKey, dsaEncoding: 'der' }, csr.signature);
  } catch (error) {
    throw invalid('signature could not be checked', error);
  }
  if (!valid) throw invalid('signature does not verify with the request public key');
  return { spkiDer: Buffer.from(csr.spki), publicKey, uris: csr.names.uris, dnsNames: csr.names.dns };
}

/**
 * Parses a PKCS#10 certificate signing request (PEM `CERTIFICATE REQUEST` or DER, at most {@link CSR_MAX_BYTES}),
 * checks its structure as strict DER, and verifies its self-signature with `crypto.verify` against its own public key.
 *
 * Accepted: version 0; a public key that is EC P-256/P-384 or RSA 2048 in canonical SubjectPublicKeyInfo DER;
 * signature ecdsa-with-SHA256, ecdsa-with-SHA384 or sha256WithRSAEncryption matching the key type; at most one
 * extensionRequest attribute, with no duplicate extensions. Everything else is refused.
 *
 * @throws PkiError `ERR_CSR_INVALID` naming the broken rule (malformed DER, PEM, key, names or signature)
 */
export function parseCsrFast(pemOrDer: string | Uint8Array): FastParsedCsr {
  const csr = readCsr(pemOrDer);
  return verifiedCsr(csr, importSpkiFast(csr.spki, 'csr public key', 'ERR_CSR_INVALID'));
}

/**
 * {@link parseCsrFast} with the same checks and errors, for batches: EC keys are imported by
 * {@link importSpkiFastAsync} (WebCrypto's raw point import before OpenSSL 3.5, the DER itself from 3.5 on:
 * `EcImportPath`). Awaiting one promise per batch (`Promise.all`) keeps that to one
 * asynchronous step per batch.
 *
 * @throws PkiError `ERR_CSR_INVALID` naming the broken rule (the promise rejects)
 */
export async function parseCsrFastAsync(pemOrDer: string | Uint8Array): Promise<FastParsedCsr> {
  const csr = readCsr(pemOrDer);
  return verifiedCsr(csr, await importSpkiFastAsync(csr.spki, 'csr public key', 'ERR_CSR_INVALID'));
}
