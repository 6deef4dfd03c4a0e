/**
 * Sigil's one PKCS#10 (RFC 2986) encoder: it writes the request with the DER writer and signs it with Node's
 * `crypto.sign`. The specs check that its CertificationRequestInfo is byte for byte what @peculiar/x509 writes for
 * the same key and names (test/support/pki-reference), and that openssl reads it.
 */
import { type KeyObject, sign, type webcrypto } from 'node:crypto';
import { SpiffeId } from '@sigil/spiffe';
import {
  derBitString,
  derContext,
  derOctetString,
  derOid,
  derSequence,
  derSet,
  derSmallInteger,
} from './der-writer.js';
import { messageOf, PkiError } from './errors.js';
import { exportPublicKeySpki, keyTypeOf, signingKeyObject } from './keys.js';
import { Oid, SIGNATURE_PROFILES } from './oids.js';
import { PEM_LABEL, toPem } from './pem.js';
import { classifySpki } from './spki.js';
import { validateDnsNames } from './svid-profile.js';

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

/** version v1 (0), then an empty subject Name (an empty RDNSequence): the SPIFFE ID goes in the SAN. */
const VERSION_AND_EMPTY_SUBJECT = Buffer.concat([derSmallInteger(0), derSequence()]);
/** `[0] IMPLICIT SET OF Attribute` with no attributes, for a request without names. */
const NO_ATTRIBUTES = derContext(0, true);
const EXTENSION_REQUEST_OID = derOid(Oid.extensionRequest);
const SUBJECT_ALT_NAME_OID = derOid(Oid.subjectAltName);

function invalidKey(message: string, cause?: unknown): PkiError {
  return new PkiError('ERR_KEY_INVALID', message, cause === undefined ? undefined : { cause });
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
 * sha256WithRSAEncryption (RSA 2048, PKCS#1 v1.5). The private key is not checked against `spkiDer`
 * (that would cost a key derivation); a mismatched pair makes a request whose signature does not verify.
 *
 * @throws PkiError `ERR_KEY_INVALID` for an unsupported or non-private key, an unsupported or non-canonical SPKI, or
 * a private key of another type than the SPKI; `ERR_PKI_INVALID_INPUT` for a bad SPIFFE ID or DNS name.
 */
export function createCsrFast(params: CreateCsrFastParams): Buffer {
  if (typeof params !== 'object' || params === null) {
    throw new PkiError('ERR_PKI_INVALID_INPUT', 'params: must be an object');
  }
  const { key, keyType } = signingKeyObject(params.privateKey, 'privateKey');
  if (!(params.spkiDer instanceof Uint8Array)) throw invalidKey('spkiDer: must be der bytes');
  const spkiKeyType = classifySpki(params.spkiDer, 'spkiDer', 'ERR_KEY_INVALID').keyType;
  if (spkiKeyType !== keyType) {
    throw invalidKey(`privateKey: is ${keyType} but spkiDer is ${spkiKeyType}, they must be the same key type`);
  }
  const uri = params.spiffeId === undefined ? undefined : spiffeIdText(params.spiffeId);
  const dnsNames = validateDnsNames(params.dnsNames);

  const profile = SIGNATURE_PROFILES[keyType];
  const info = derSequence(VERSION_AND_EMPTY_SUBJECT, params.spkiDer, attributes(uri, dnsNames));
  let signature: Buffer;
  try {
    signature = sign(profile.hash, info, { key, dsaEncoding: 'der' });
  } catch (error) {
    throw invalidKey(`privateKey: cannot sign with it: ${messageOf(error)}`, error);
  }
  return derSequence(info, profile.algorithmIdentifier, derBitString(signature));
}

/** What to put in a certificate signing request made by {@link createCsr}. */
export interface CreateCsrParams {
  /** The key pair whose public key is requested; the private key signs the request. */
  readonly keys: webcrypto.CryptoKeyPair;
  /** When given, requested as the URI SAN. */
  readonly spiffeId?: SpiffeId;
  /** When given, requested as DNS SANs, in order (validated as in an X.509-SVID). */
  readonly dnsNames?: readonly string[];
}

/** A created CSR in both encodings. */
export interface CreatedCsr {
  readonly pem: string;
  readonly der: Uint8Array;
}

/**
 * Creates a PKCS#10 request (RFC 2986) for a WebCrypto key pair, with an empty subject, signed with the pair's
 * private key, carrying a subjectAltName extension request when a SPIFFE ID or DNS names are given: the request
 * {@link createCsrFast} writes, in DER and PEM.
 *
 * @throws PkiError `ERR_KEY_INVALID` for an unsupported key, `ERR_PKI_INVALID_INPUT` for a bad DNS name.
 */
export async function createCsr(params: CreateCsrParams): Promise<CreatedCsr> {
  const keys = params?.keys;
  if (!keys?.privateKey || !keys.publicKey) {
    throw new PkiError('ERR_KEY_INVALID', 'keys: must be a CryptoKeyPair with publicKey and privateKey');
  }
  const keyType = keyTypeOf(keys.privateKey);
  if (keyTypeOf(keys.publicKey) !== keyType) {
    throw new PkiError('ERR_KEY_INVALID', 'keys: publicKey and privateKey are of different key types');
  }
  const der = new Uint8Array(
    createCsrFast({
      privateKey: keys.privateKey,
      spkiDer: exportPublicKeySpki(keys.publicKey),
      spiffeId: params.spiffeId,
      dnsNames: params.dnsNames,
    }),
  );
  return { pem: toPem(PEM_LABEL.certificateRequest, der), der };
}
