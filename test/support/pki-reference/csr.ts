/**
 * Test support: PKCS#10 requests made and read by @peculiar/x509, independent of Sigil's DER writer and reader. This
 * was the first implementation; the specs and the CSR fuzz target now use it to cross-check `createCsr`/`createCsrFast`
 * (same CertificationRequestInfo, byte for byte) and `parseCsrFast` (never accepts what this parser refuses).
 */
import type { webcrypto } from 'node:crypto';
import type { SpiffeId } from '@sigil/spiffe';
import { DerCursor, derBytes, type DerContext } from '../../../libs/pki/src/der-reader.js';
import { DerTag } from '../../../libs/pki/src/der-tags.js';
import { PkiError, messageOf } from '../../../libs/pki/src/errors.js';
import {
  importPublicKeySpki,
  inspectSpki,
  keyTypeOf,
  signingAlgorithmFor,
  type KeyType,
} from '../../../libs/pki/src/keys.js';
import { Oid } from '../../../libs/pki/src/oids.js';
import { PEM_LABEL, singlePemBlock, toPem } from '../../../libs/pki/src/pem.js';
import { validateDnsNames } from '../../../libs/pki/src/svid-profile.js';
import { x509 } from '../../../libs/pki/src/x509-lib.js';

/** What to put in a certificate signing request. */
export interface CreateCsrReferenceParams {
  /** The key pair whose public key is requested; the private key signs the request. */
  readonly keys: webcrypto.CryptoKeyPair;
  /** When given, requested as the URI SAN. */
  readonly spiffeId?: SpiffeId;
  /** When given, requested as DNS SANs, in order (validated as in an X.509-SVID). */
  readonly dnsNames?: readonly string[];
}

/** A created CSR in both encodings. */
export interface CreatedCsrReference {
  readonly pem: string;
  readonly der: Uint8Array;
}

/** A CSR whose self-signature verified. */
export interface ParsedCsrReference {
  /** The requested public key, as a WebCrypto verification key. */
  readonly publicKey: webcrypto.CryptoKey;
  /** The exact SubjectPublicKeyInfo bytes of the request (canonical DER, checked). */
  readonly spkiDer: Uint8Array;
  readonly keyType: KeyType;
  /** URI SANs requested in the extensionRequest attribute. */
  readonly uris: string[];
  /** DNS SANs requested in the extensionRequest attribute. */
  readonly dnsNames: string[];
  readonly csr: x509.Pkcs10CertificateRequest;
}

/**
 * Creates a PKCS#10 request (RFC 2986) with an empty subject, signed with the key pair's private key, carrying a
 * subjectAltName extension request when a SPIFFE ID or DNS names are given.
 *
 * @throws PkiError `ERR_KEY_INVALID` for an unsupported key, `ERR_PKI_INVALID_INPUT` for a bad DNS name.
 */
export async function createCsrReference(params: CreateCsrReferenceParams): Promise<CreatedCsrReference> {
  const keys = params?.keys;
  if (!keys?.privateKey || !keys.publicKey) {
    throw new PkiError('ERR_KEY_INVALID', 'keys: must be a CryptoKeyPair with publicKey and privateKey');
  }
  const keyType = keyTypeOf(keys.privateKey);
  if (keyTypeOf(keys.publicKey) !== keyType) {
    throw new PkiError('ERR_KEY_INVALID', 'keys: publicKey and privateKey are of different key types');
  }
  const dnsNames = validateDnsNames(params.dnsNames);
  const names: x509.JsonGeneralName[] = [];
  if (params.spiffeId !== undefined) names.push({ type: 'url', value: params.spiffeId.toString() });
  for (const dnsName of dnsNames) names.push({ type: 'dns', value: dnsName });
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: signingAlgorithmFor(keyType),
    extensions: names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names, false)] : [],
  });
  const der = new Uint8Array(csr.rawData);
  return { pem: toPem(PEM_LABEL.certificateRequest, der), der };
}

const CSR_DER: DerContext = { name: 'der', code: 'ERR_CSR_INVALID' };

/** The exact SubjectPublicKeyInfo encoding inside a PKCS#10 request (RFC 2986 §4), refusing trailing data. */
function csrSubjectPublicKeyInfo(der: Uint8Array): Uint8Array {
  const top = DerCursor.over(der, CSR_DER);
  const request = top.expect(DerTag.SEQUENCE, 'CertificationRequest');
  top.finish('the input (one CertificationRequest)');
  const requestFields = top.enter(request, 'CertificationRequest');
  const info = requestFields.enter(
    requestFields.expect(DerTag.SEQUENCE, 'certificationRequestInfo'),
    'certificationRequestInfo',
  );
  info.expect(DerTag.INTEGER, 'version');
  info.expect(DerTag.SEQUENCE, 'subject');
  return derBytes(der, info.expect(DerTag.SEQUENCE, 'subjectPKInfo')).slice();
}

function csrError(message: string, cause?: unknown): PkiError {
  return new PkiError('ERR_CSR_INVALID', message, cause === undefined ? undefined : { cause });
}

/**
 * Parses a PKCS#10 request from PEM (exactly one "CERTIFICATE REQUEST" block) or DER, and verifies its
 * self-signature with @peculiar/x509. The public key must be EC P-256, EC P-384 or RSA 2048 in canonical DER.
 *
 * @throws PkiError `ERR_CSR_INVALID` saying what is wrong: garbage, trailing data, wrong PEM label, unsupported key,
 * bad signature.
 */
export async function parseCsrReference(pemOrDer: string | Uint8Array): Promise<ParsedCsrReference> {
  let der: Uint8Array;
  if (typeof pemOrDer === 'string') {
    try {
      der = singlePemBlock(pemOrDer, PEM_LABEL.certificateRequest, 'csr');
    } catch (error) {
      throw csrError(messageOf(error), error);
    }
  } else if (pemOrDer instanceof Uint8Array) {
    der = pemOrDer;
  } else {
    throw csrError('csr: must be a pem string or der bytes');
  }

  let spkiDer: Uint8Array;
  let csr: x509.Pkcs10CertificateRequest;
  try {
    spkiDer = csrSubjectPublicKeyInfo(der);
    csr = new x509.Pkcs10CertificateRequest(der.slice());
  } catch (error) {
    throw csrError(`csr: not a valid der certification request: ${messageOf(error)}`, error);
  }

  let keyType: KeyType;
  try {
    keyType = inspectSpki(spkiDer, undefined, 'csr public key').keyType;
  } catch (error) {
    throw csrError(messageOf(error), error);
  }

  let verified: boolean;
  try {
    verified = await csr.verify();
  } catch (error) {
    throw csrError(`csr: signature cannot be checked: ${messageOf(error)}`, error);
  }
  if (!verified) throw csrError('csr: signature does not verify with the requested public key');

  const { uris, dnsNames } = requestedNames(csr);
  const publicKey = await importPublicKeySpki(spkiDer, keyType);
  return { publicKey, spkiDer, keyType, uris, dnsNames, csr };
}

function requestedNames(csr: x509.Pkcs10CertificateRequest): { uris: string[]; dnsNames: string[] } {
  const uris: string[] = [];
  const dnsNames: string[] = [];
  let sans: x509.Extension[];
  try {
    sans = csr.getExtensions(Oid.subjectAltName);
  } catch (error) {
    throw csrError(`csr: extension request is malformed: ${messageOf(error)}`, error);
  }
  if (sans.length > 1) throw csrError('csr: extension request has more than one subjectAltName');
  for (const san of sans) {
    let names: readonly x509.GeneralName[];
    try {
      names = new x509.SubjectAlternativeNameExtension(san.rawData).names.items;
    } catch (error) {
      throw csrError(`csr: subjectAltName is malformed: ${messageOf(error)}`, error);
    }
    for (const name of names) {
      if (name.type === 'url') uris.push(name.value);
      if (name.type === 'dns') dnsNames.push(name.value);
    }
  }
  return { uris, dnsNames };
}
