/**
 * The X.509-SVID leaf profile: the constants, the input validation and every value that goes into the
 * TBSCertificate, computed in one place. The signer (`svid-signer.ts`) only encodes these values; the reference
 * builder the specs cross-check it against (test/support/pki-reference) takes them from here too.
 */
import { createHash, getRandomValues } from 'node:crypto';
import { SpiffeId, type TrustDomain } from '@sigil/spiffe';
import { subjectPublicKeyBits } from './der-reader.js';
import { isPrintableString } from './der-writer.js';
import { PkiError } from './errors.js';
import { Oid } from './oids.js';

/** Not-before is this many seconds before the signing time, as SPIRE does, to absorb clock skew. */
export const SVID_BACKDATE_SECONDS = 10;
/** Random serial numbers are this many bytes long (positive, top bit cleared). */
export const SERIAL_NUMBER_BYTES = 16;
/** RFC 5280 §4.1.2.2: serial numbers are at most 20 octets. */
export const MAX_SERIAL_NUMBER_BYTES = 20;
/** A DNS name is at most 253 characters in text form (RFC 1035 §2.3.4). */
export const MAX_DNS_NAME_LENGTH = 253;
/** A DNS label is at most 63 characters (RFC 1035 §2.3.4). */
export const MAX_DNS_LABEL_LENGTH = 63;
/** The organization of every X.509-SVID subject. */
export const SVID_ORGANIZATION = 'Sigil';

const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/;

function invalid(message: string): PkiError {
  return new PkiError('ERR_PKI_INVALID_INPUT', message);
}

function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
}

/**
 * Checks one DNS name for an X.509-SVID DNS SAN. This is Sigil's one DNS-name rule: the registry checks entries with
 * it, so every entry it accepts can be signed. The name is an RFC 1035/1123 host name (ASCII labels of letters,
 * digits and inner hyphens, 1–63 characters, at most 253 in all, no trailing dot, last label not all digits),
 * optionally starting with a `*.` wildcard label that covers at least two labels.
 *
 * Where it differs from SPIRE (`x509util.ValidateLabel`: IDNA `ToASCII` with STD3 rules, ASCII only, `*` only as
 * the whole first label, no trailing dot) it is stricter, on purpose:
 * - An all-digit last label is refused. RFC 5280 §4.2.1.6 takes dNSName from RFC 1034 §3.5 as amended by RFC 1123
 *   §2.1, which keeps the highest-level label alphabetic so that `10.0.0.1` is never read as a host name; an IP
 *   address belongs in an iPAddress SAN, which entries do not carry. SPIRE accepts `10.0.0.1` and `web.123`.
 * - A wildcard must cover at least two labels (`*.example.org`, not `*.com`). OpenSSL's host check (so Node, curl,
 *   Python; BoringSSL, so Envoy, shares its code) never matches a wildcard with fewer than two labels after it
 *   (`openssl x509 -checkhost foo.com` on a `DNS:*.com` leaf: no match), while Go's matches it, so such a SAN means
 *   different things to different relying parties; RFC 6125 §7.2 warns against broad wildcards and the CA/Browser
 *   Forum refuses them over a public suffix. SPIRE accepts `*.com`.
 *
 * @throws PkiError `ERR_PKI_INVALID_INPUT` naming `field` and the broken rule.
 */
export function validateDnsName(name: unknown, field = 'dnsName'): string {
  if (typeof name !== 'string') throw invalid(`${field}: must be a string`);
  if (name.length === 0) throw invalid(`${field}: cannot be empty`);
  if (name.length > MAX_DNS_NAME_LENGTH) {
    throw invalid(`${field}: must be at most ${MAX_DNS_NAME_LENGTH} characters, got ${name.length}`);
  }
  const labels = name.split('.');
  const wildcard = labels[0] === '*';
  const hostLabels = wildcard ? labels.slice(1) : labels;
  if (hostLabels.length === 0) {
    throw invalid(`${field}: wildcard ${quote(name)} must be followed by a host name`);
  }
  if (/^[0-9]+$/.test(hostLabels[hostLabels.length - 1]!)) {
    throw invalid(`${field}: ${quote(name)} looks like an ip address, its last label must not be all digits`);
  }
  if (wildcard && hostLabels.length === 1 && hostLabels[0] !== '') {
    throw invalid(`${field}: wildcard ${quote(name)} must cover at least two labels, as in *.example.org`);
  }
  for (const label of hostLabels) {
    if (label.length === 0) throw invalid(`${field}: ${quote(name)} has an empty label`);
    if (label.length > MAX_DNS_LABEL_LENGTH) {
      throw invalid(`${field}: label ${quote(label)} must be at most ${MAX_DNS_LABEL_LENGTH} characters`);
    }
    if (label.includes('*')) throw invalid(`${field}: ${quote(name)} may only use "*" as the whole first label`);
    if (!DNS_LABEL.test(label)) {
      throw invalid(
        `${field}: label ${quote(label)} must be letters, digits and hyphens, not starting or ending with "-"`,
      );
    }
  }
  return name;
}

/**
 * Checks a list of DNS names (see {@link validateDnsName}); duplicates (compared case-insensitively) are refused.
 * Returns a copy, in the given order.
 */
export function validateDnsNames(names: readonly unknown[] | undefined, field = 'dnsNames'): string[] {
  if (names === undefined) return [];
  if (!Array.isArray(names)) throw invalid(`${field}: must be an array of strings`);
  const seen = new Map<string, number>();
  return names.map((name, index) => {
    const checked = validateDnsName(name, `${field}[${index}]`);
    const earlier = seen.get(checked.toLowerCase());
    if (earlier !== undefined) throw invalid(`${field}[${index}]: duplicate of ${field}[${earlier}]`);
    seen.set(checked.toLowerCase(), index);
    return checked;
  });
}

/** Checks that `ttlSeconds` is a positive integer. */
export function validateTtlSeconds(ttlSeconds: unknown, field = 'ttlSeconds'): number {
  if (typeof ttlSeconds !== 'number' || !Number.isSafeInteger(ttlSeconds) || ttlSeconds <= 0) {
    throw invalid(`${field}: must be a positive integer number of seconds, got ${String(ttlSeconds)}`);
  }
  return ttlSeconds;
}

/** Checks that `now` is a valid Date. */
export function validateNow(now: unknown, field = 'now'): Date {
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) throw invalid(`${field}: must be a valid Date`);
  return now;
}

/**
 * A random serial number: 16 random bytes with the top bit cleared (positive) and a non-zero first byte, so the
 * DER INTEGER is exactly these 16 bytes with no padding.
 */
export function generateSerialNumber(): Uint8Array {
  const serial = getRandomValues(new Uint8Array(SERIAL_NUMBER_BYTES));
  serial[0] = serial[0]! & 0x7f;
  if (serial[0] === 0) serial[0] = 0x01;
  return serial;
}

/**
 * Checks an explicit serial number: the INTEGER content octets, 1–20 bytes, first byte 0x01–0x7f (positive and
 * minimal, so no padding is needed). Returns a copy.
 */
export function validateSerialNumber(serial: unknown, field = 'serial'): Uint8Array {
  if (!(serial instanceof Uint8Array)) throw invalid(`${field}: must be a Uint8Array`);
  if (serial.length === 0 || serial.length > MAX_SERIAL_NUMBER_BYTES) {
    throw invalid(`${field}: must be 1 to ${MAX_SERIAL_NUMBER_BYTES} bytes, got ${serial.length}`);
  }
  if (serial[0]! === 0 || serial[0]! > 0x7f) {
    throw invalid(`${field}: first byte must be 0x01 to 0x7f (a positive integer without padding)`);
  }
  return serial.slice();
}

/** One attribute of a leaf subject, which is one RDN: the value, and the ASN.1 string type it is encoded as. */
export interface SubjectAttribute {
  readonly oid: string;
  readonly value: string;
  readonly encoding: 'printableString' | 'utf8String';
}

/**
 * The leaf subject, one attribute per RDN: `O=Sigil`, then `CN=<first DNS name>` when there are DNS names (as
 * SPIRE). Each value is a PrintableString when it fits one (X.680 §41.4), else a UTF8String (a wildcard's `*`).
 */
export function svidSubject(dnsNames: readonly string[]): SubjectAttribute[] {
  const attribute = (oid: string, value: string): SubjectAttribute => ({
    oid,
    value,
    encoding: isPrintableString(value) ? 'printableString' : 'utf8String',
  });
  const subject = [attribute(Oid.organizationName, SVID_ORGANIZATION)];
  if (dnsNames.length > 0) subject.push(attribute(Oid.commonName, dnsNames[0]!));
  return subject;
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING value of a SubjectPublicKeyInfo. */
export function subjectKeyIdentifier(spkiDer: Uint8Array): Uint8Array {
  const bits = subjectPublicKeyBits(spkiDer, { name: 'spki', code: 'ERR_DER_INVALID' });
  return new Uint8Array(createHash('sha1').update(bits).digest());
}

/** What a CA certificate contributes to every leaf it signs, read once. */
export interface SigningCaProfile {
  /** The CA's subject DER, copied byte for byte into each leaf's issuer. */
  readonly subjectDer: Uint8Array;
  /** The CA's SubjectPublicKeyInfo DER. */
  readonly spkiDer: Uint8Array;
  /** The CA's subject key identifier (its SKI extension, else RFC 5280 method 1), the leaves' AKI keyIdentifier. */
  readonly keyIdentifier: Uint8Array;
  readonly notAfter: Date;
  /** The trust domain of the CA's SPIFFE URI SAN, when it has one (an upstream CA may not). */
  readonly trustDomain: TrustDomain | undefined;
}

/** The caller-controlled input of one leaf, before validation. */
export interface SvidInput {
  readonly spiffeId: SpiffeId;
  readonly dnsNames?: readonly string[];
  readonly ttlSeconds: number;
  readonly now: Date;
  readonly serial?: Uint8Array;
}

/** Every per-leaf value of the TBSCertificate, validated; a builder only encodes these. */
export interface SvidFields {
  readonly serial: Uint8Array;
  /** now − 10 s, truncated to whole seconds. */
  readonly notBefore: Date;
  /** min(now + ttl, CA notAfter), truncated to whole seconds. */
  readonly notAfter: Date;
  readonly subject: readonly SubjectAttribute[];
  /** The URI SAN: the SPIFFE ID. */
  readonly uri: string;
  /** The DNS SANs, after the URI SAN, in the given order. */
  readonly dnsNames: readonly string[];
}

/**
 * Validates one leaf's input against the signing CA and computes its fields (serial, validity, subject, SANs).
 *
 * @throws PkiError `ERR_PKI_INVALID_INPUT` for bad input, `ERR_CA_INVALID` when the CA has expired.
 */
export function resolveSvidFields(input: SvidInput, ca: SigningCaProfile): SvidFields {
  if (!(input.spiffeId instanceof SpiffeId)) throw invalid('spiffeId: must be a parsed SpiffeId');
  if (input.spiffeId.isRoot()) {
    throw invalid(
      `spiffeId: ${quote(input.spiffeId.toString())} must have a path (an X.509-SVID never names a trust domain)`,
    );
  }
  if (ca.trustDomain && !input.spiffeId.isMemberOf(ca.trustDomain)) {
    throw invalid(
      `spiffeId: ${quote(input.spiffeId.toString())} is not in the ca's trust domain ${quote(ca.trustDomain.name)}`,
    );
  }
  const dnsNames = validateDnsNames(input.dnsNames);
  const ttlSeconds = validateTtlSeconds(input.ttlSeconds);
  const now = validateNow(input.now).getTime();
  const serial = input.serial === undefined ? generateSerialNumber() : validateSerialNumber(input.serial);

  const caNotAfter = ca.notAfter.getTime();
  if (caNotAfter <= now) {
    throw new PkiError('ERR_CA_INVALID', `ca.certificate: expired at ${ca.notAfter.toISOString()}, cannot sign`);
  }
  const wholeSeconds = (ms: number): Date => new Date(Math.floor(ms / 1000) * 1000);
  return {
    serial,
    notBefore: wholeSeconds(now - SVID_BACKDATE_SECONDS * 1000),
    notAfter: wholeSeconds(Math.min(now + ttlSeconds * 1000, caNotAfter)),
    subject: svidSubject(dnsNames),
    uri: input.spiffeId.toString(),
    dnsNames,
  };
}
