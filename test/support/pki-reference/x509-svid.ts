/**
 * Test support: an X.509-SVID builder on @peculiar/x509's certificate generator, independent of Sigil's DER writer.
 * It was the first implementation of the leaf profile; the specs now use it to cross-check `X509SvidSigner`, which
 * must produce the same TBSCertificate byte for byte.
 */
import type { webcrypto } from 'node:crypto';
import type { SpiffeId } from '@sigil/spiffe';
import { signCertificate } from '../../../libs/pki/src/certificate.js';
import { PkiError } from '../../../libs/pki/src/errors.js';
import { exportPublicKeySpki, inspectSpki, keyTypeOf } from '../../../libs/pki/src/keys.js';
import { Oid } from '../../../libs/pki/src/oids.js';
import { signingCaProfile } from '../../../libs/pki/src/signing-ca.js';
import { resolveSvidFields, subjectKeyIdentifier, type SvidFields } from '../../../libs/pki/src/svid-profile.js';
import { x509 } from '../../../libs/pki/src/x509-lib.js';

/** keyUsage of a leaf, as SPIRE: digitalSignature | keyEncipherment | keyAgreement (RFC 5280 §4.2.1.3 bits 0, 2, 4). */
const SVID_KEY_USAGE =
  x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.keyAgreement;

/** A CA that signs X.509-SVIDs: its certificate and private key. */
export interface SigningCa {
  readonly certificate: x509.X509Certificate;
  readonly privateKey: webcrypto.CryptoKey;
}

interface X509SvidParamsBase {
  readonly ca: SigningCa;
  /** The SVID's SPIFFE ID: in the CA's trust domain (when the CA has a SPIFFE URI SAN), with a non-root path. */
  readonly spiffeId: SpiffeId;
  /** DNS SANs in order; the first is also the subject CN. */
  readonly dnsNames?: readonly string[];
  /** Requested lifetime in seconds (positive integer); the SVID never outlives the CA. */
  readonly ttlSeconds: number;
  /** Signing time; not-before is 10 s earlier. */
  readonly now: Date;
  /** Serial number content octets (1–20 bytes, first byte 0x01–0x7f); 16 random bytes when absent. */
  readonly serial?: Uint8Array;
}

/** Input of {@link buildX509SvidReference}: the subject key as a WebCrypto public key or as verified SPKI DER. */
export type X509SvidParams = X509SvidParamsBase &
  (
    | { readonly publicKey: webcrypto.CryptoKey; readonly spkiDer?: undefined }
    | { readonly spkiDer: Uint8Array; readonly publicKey?: undefined }
  );

function subjectSpki(params: X509SvidParams): Uint8Array {
  if (params.publicKey !== undefined && params.spkiDer !== undefined) {
    throw new PkiError('ERR_PKI_INVALID_INPUT', 'publicKey, spkiDer: give exactly one of them, not both');
  }
  if (params.publicKey !== undefined) {
    keyTypeOf(params.publicKey);
    return exportPublicKeySpki(params.publicKey);
  }
  if (params.spkiDer !== undefined) {
    inspectSpki(params.spkiDer, undefined, 'spkiDer');
    return params.spkiDer.slice();
  }
  throw new PkiError('ERR_PKI_INVALID_INPUT', 'publicKey, spkiDer: one of them is required');
}

function subjectName(fields: SvidFields): x509.Name {
  return new x509.Name(
    fields.subject.map((attribute) => ({ [attribute.oid]: [{ [attribute.encoding]: attribute.value }] })),
  );
}

/** The leaf extensions, in the profile's order (the SPIFFE X509-SVID standard §4; libs/pki/README.md, Certificate profiles). */
function svidExtensions(fields: SvidFields, spkiDer: Uint8Array, caKeyIdentifier: Uint8Array): x509.Extension[] {
  const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
  const names: x509.JsonGeneralName[] = [
    { type: 'url', value: fields.uri },
    ...fields.dnsNames.map((value): x509.JsonGeneralName => ({ type: 'dns', value })),
  ];
  return [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(SVID_KEY_USAGE, true),
    new x509.ExtendedKeyUsageExtension([Oid.serverAuth, Oid.clientAuth], false),
    new x509.SubjectKeyIdentifierExtension(hex(subjectKeyIdentifier(spkiDer)), false),
    new x509.AuthorityKeyIdentifierExtension(hex(caKeyIdentifier), false),
    // The subject is never empty (O=Sigil), so the SAN is not critical (RFC 5280 §4.2.1.6).
    new x509.SubjectAlternativeNameExtension(names, false),
  ];
}

/**
 * Builds and signs an X.509-SVID with @peculiar/x509: the reference implementation of the leaf profile in
 * libs/pki/src/svid-profile.ts, which `X509SvidSigner` must match byte for byte in the TBSCertificate. The result is
 * re-validated: issuer and public key copied exactly, signature verifying under the CA's key.
 *
 * @throws PkiError `ERR_PKI_INVALID_INPUT` naming the bad field (SPIFFE ID, DNS name, TTL, serial, key input),
 * `ERR_KEY_INVALID` for an unsupported subject key, `ERR_CA_INVALID` when the CA cannot sign (not a CA, no
 * keyCertSign, expired, private key not matching).
 */
export async function buildX509SvidReference(params: X509SvidParams): Promise<x509.X509Certificate> {
  const ca = signingCaProfile(params.ca?.certificate);
  keyTypeOf(params.ca.privateKey);
  const spkiDer = subjectSpki(params);
  const fields = resolveSvidFields(params, ca);
  const { certificate } = await signCertificate({
    serial: fields.serial,
    notBefore: fields.notBefore,
    notAfter: fields.notAfter,
    subject: subjectName(fields),
    issuerDer: ca.subjectDer,
    spkiDer,
    extensions: svidExtensions(fields, spkiDer, ca.keyIdentifier),
    signingKey: params.ca.privateKey,
    issuerSpkiDer: ca.spkiDer,
  });
  return certificate;
}
