/**
 * A lean PKCS#10 (RFC 2986) encoder for the agent's per-entry path: it writes the request with the fast DER writer
 * and signs it with Node's `crypto.sign`, instead of building it through @peculiar/x509's ASN.1 schema layer. The
 * CertificationRequestInfo is byte for byte what `createCsr` (libs/pki/src/csr.ts) writes for the same key and names.
 */
import { KeyObject, sign, type webcrypto } from 'node:crypto';
import { SpiffeId } from '@sigil/spiffe';
import { messageOf, PkiError } from '../errors.js';
import type { KeyType } from '../keys.js';
import { validateDnsNames } from '../svid-profile.js';
import { derContext, derOctetString, derOid, derSequence, derSet, derBitString, derSmallInteger } from './der.js';
import { ALGORITHM_IDENTIFIERS, Oid } from './oids.js';
import { classifySpki } from './spki.js';

/** What to put in a request built by {@link createCsrFast}. */
export interface CreateCsrFastParams {
  /** Signs the request; its public half must be the key of `spkiDer` (not checked here: the server's check is). */
  readonly privateKey: KeyObject | webcrypto.CryptoKey;
  /** The SubjectPublicKeyInfo to request, copied as is: canonical DER of EC P-256, EC P-384 or RSA 2048. */
  readonly spkiDer: Uint8Array;
  /** When given, requested as the URI SAN (a string is parsed as a SPIFFE ID first). */
  readonly spiffeId?: SpiffeId | string;
  /** When given, requested as DNS SANs, in order (validated as in an X.509-SVID). */
  readonly dnsNames?: readonly string[];
}

/** version v1 (0), then the empty subject Name that `createCsr` writes (an empty RDNSequence). */
const VERSION_AND_EMPTY_SUBJECT = Buffer.concat([derSmallInteger(0), derSequence()]);
/** `[0] IMPLICIT SET OF Attribute` with no attributes, as `createCsr` writes it when there are no names. */
const NO_ATTRIBUTES = derContext(0, true);
const EXTENSION_REQUEST_OID = derOid(Oid.extensionRequest);
const SUBJECT_ALT_NAME_OID = derOid(Oid.subjectAltName);

interface SignatureProfile {
  readonly keyType: KeyType;
  readonly algorithmIdentifier: Buffer;
  readonly hash: 'sha256' | 'sha384';
}

const PROFILES: Readonly<Record<KeyType, SignatureProfile>> = {
  'ec-p256': { keyType: 'ec-p256', algorithmIdentifier: ALGORITHM_IDENTIFIERS.ecdsaWithSha256, hash: 'sha256' },
  'ec-p384': { keyType: 'ec-p384', algorithmIdentifier: ALGORITHM_IDENTIFIERS.ecdsaWithSha384, hash: 'sha384' },
  'rsa-2048': {
    keyType: 'rsa-2048',
    algorithmIdentifier: ALGORITHM_IDENTIFIERS.sha256WithRsaEncryption,
    hash: 'sha256',
  },
};

function invalidKey(message: string, cause?: unknown): PkiError {
  return new PkiError('ERR_KEY_INVALID', message, cause === undefined ? undefined : { cause });
}

/** The private key as a KeyObject, with the key type read from its details (WebCrypto keys need not be extractable). */
function privateKeyOf(privateKey: unknown): { key: KeyObject; keyType: KeyType } {
  let key: KeyObject;
  try {
    key = privateKey instanceof KeyObject ? privateKey : KeyObject.from(privateKey as webcrypto.CryptoKey);
  } catch (error) {
    throw invalidKey('privateKey: must be a CryptoKey or a KeyObject', error);
  }
  if (key.type !== 'private') throw invalidKey(`privateKey: must be a private key, got ${key.type}`);
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec' && details.namedCurve === 'prime256v1') return { key, keyType: 'ec-p256' };
  if (key.asymmetricKeyType === 'ec' && details.namedCurve === 'secp384r1') return { key, keyType: 'ec-p384' };
  if (key.asymmetricKeyType === 'rsa' && details.modulusLength === 2048) return { key, keyType: 'rsa-2048' };
  throw invalidKey('privateKey: must be ec P-256, ec P-384 or rsa 2048');
}

function spiffeIdText(spiffeId: unknown): string {
  if (spiffeId instanceof SpiffeId) return spiffeId.toString();
  if (typeof spiffeId !== 'string')
    throw new PkiError('ERR_PKI_INVALID_INPUT', 'spiffeId: must be a SpiffeId or a string');
  try {
    return SpiffeId.parse(spiffeId).toString();
  } catch (error) {
    throw new PkiError('ERR_PKI_INVALID_INPUT', `spiffeId: ${messageOf(error)}`, { cause: error });
  }
}

/**
 * The attributes field: one extensionRequest (RFC 2985 §5.4.2) holding a non-critical subjectAltName (RFC 5280
 * §4.2.1.6) with the URI first, then the DNS names; no attributes at all when there is no name.
 */
function attributes(uri: string | undefined, dnsNames: readonly string[]): Buffer {
  if (uri === undefined && dnsNames.length === 0) return NO_ATTRIBUTES;
  const names: Buffer[] = [];
  // uniformResourceIdentifier [6] and dNSName [2] are IA5String, implicitly tagged; both were checked to be ASCII.
  if (uri !== undefined) names.push(derContext(6, false, Buffer.from(uri, 'latin1')));
  for (const dnsName of dnsNames) names.push(derContext(2, false, Buffer.from(dnsName, 'latin1')));
  const subjectAltName = derSequence(SUBJECT_ALT_NAME_OID, derOctetString(derSequence(...names)));
  return derContext(0, true, derSequence(EXTENSION_REQUEST_OID, derSet(derSequence(subjectAltName))));
}

/**
 * Builds a PKCS#10 certificate signing request (RFC 2986) as DER: version 0, an empty subject, `spkiDer` copied as
 * the requested key, and an extensionRequest with the subjectAltName when a SPIFFE ID or DNS names are given. It is
 * signed with `crypto.sign`: ecdsa-with-SHA256 (P-256) or ecdsa-with-SHA384 (P-384) with a DER signature, or
 * sha256WithRSAEncryption (RSA 2048, PKCS#1 v1.5). The result is what `createCsr` produces, minus the
 * randomness of ECDSA signatures, at a fraction of its cost. The private key is not checked against `spkiDer`
 * (that would cost a key derivation); a mismatched pair makes a request whose signature does not verify.
 *
 * @throws PkiError `ERR_KEY_INVALID` for an unsupported or non-private key, an unsupported or non-canonical SPKI, or
 * a private key of another type than the SPKI; `ERR_PKI_INVALID_INPUT` for a bad SPIFFE ID or DNS name.
 */
export function createCsrFast(params: CreateCsrFastParams): Buffer {
  if (typeof params !== 'object' || params === null) {
    throw new PkiError('ERR_PKI_INVALID_INPUT', 'params: must be an object');
  }
  const { key, keyType } = privateKeyOf(params.privateKey);
  if (!(params.spkiDer instanceof Uint8Array)) throw invalidKey('spkiDer: must be der bytes');
  const spkiKeyType = classifySpki(params.spkiDer, 'spkiDer', 'ERR_KEY_INVALID').keyType;
  if (spkiKeyType !== keyType) {
    throw invalidKey(`privateKey: is ${keyType} but spkiDer is ${spkiKeyType}, they must be the same key type`);
  }
  const uri = params.spiffeId === undefined ? undefined : spiffeIdText(params.spiffeId);
  const dnsNames = validateDnsNames(params.dnsNames);

  const profile = PROFILES[keyType];
  const info = derSequence(VERSION_AND_EMPTY_SUBJECT, params.spkiDer, attributes(uri, dnsNames));
  let signature: Buffer;
  try {
    signature = sign(profile.hash, info, { key, dsaEncoding: 'der' });
  } catch (error) {
    throw invalidKey(`privateKey: cannot sign with it: ${messageOf(error)}`, error);
  }
  return derSequence(info, profile.algorithmIdentifier, derBitString(signature));
}
