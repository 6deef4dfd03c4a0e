import { SpiffeId, TrustDomain } from '@sigil/spiffe';
import { describe, expect, it } from 'vitest';
import { exportPublicKeySpki, generateKeyPair } from './keys.js';
import {
  generateSerialNumber,
  resolveSvidFields,
  subjectKeyIdentifier,
  svidSubject,
  validateDnsName,
  validateDnsNames,
  validateSerialNumber,
  validateTtlSeconds,
  type SigningCaProfile,
} from './svid-profile.js';
import { x509 } from './x509-lib.js';

describe('validateDnsName', () => {
  it.each([
    'example.org',
    'a',
    'web-1.prod.example.org',
    '1password.com',
    'EXAMPLE.org',
    '*.example.org',
    '*.svc.cluster.local',
    `${'a'.repeat(63)}.example.org`,
    [...Array(4)].map(() => 'a'.repeat(61)).join('.') + '.abc', // 4×61 + 4 dots + 3 = 251
    [...Array(4)].map(() => 'a'.repeat(62)).join('.') + '.a', // exactly 253
  ])('accepts %j', (name) => {
    expect(validateDnsName(name, 'dnsNames[0]')).toBe(name);
  });

  it.each([
    ['', 'dnsNames[0]: cannot be empty'],
    ['*', 'dnsNames[0]: wildcard "*" must be followed by a host name'],
    ['*.', 'dnsNames[0]: "*." has an empty label'],
    ['*.org', 'dnsNames[0]: wildcard "*.org" must cover at least two labels, as in *.example.org'],
    ['*.localhost', 'dnsNames[0]: wildcard "*.localhost" must cover at least two labels, as in *.example.org'],
    ['*.10', 'dnsNames[0]: "*.10" looks like an ip address, its last label must not be all digits'],
    ['web.123', 'dnsNames[0]: "web.123" looks like an ip address, its last label must not be all digits'],
    ['*.*.example.org', 'dnsNames[0]: "*.*.example.org" may only use "*" as the whole first label'],
    ['example.org.', 'dnsNames[0]: "example.org." has an empty label'],
    ['.example.org', 'dnsNames[0]: ".example.org" has an empty label'],
    ['a..b', 'dnsNames[0]: "a..b" has an empty label'],
    ['web.*.example.org', 'dnsNames[0]: "web.*.example.org" may only use "*" as the whole first label'],
    ['w*.example.org', 'dnsNames[0]: "w*.example.org" may only use "*" as the whole first label'],
    ['**.example.org', 'dnsNames[0]: "**.example.org" may only use "*" as the whole first label'],
    [
      '-web.example.org',
      'dnsNames[0]: label "-web" must be letters, digits and hyphens, not starting or ending with "-"',
    ],
    [
      'web-.example.org',
      'dnsNames[0]: label "web-" must be letters, digits and hyphens, not starting or ending with "-"',
    ],
    [
      'we_b.example.org',
      'dnsNames[0]: label "we_b" must be letters, digits and hyphens, not starting or ending with "-"',
    ],
    [
      'wéb.example.org',
      'dnsNames[0]: label "wéb" must be letters, digits and hyphens, not starting or ending with "-"',
    ],
    [
      'web example.org',
      'dnsNames[0]: label "web example" must be letters, digits and hyphens, not starting or ending with "-"',
    ],
    ['10.0.0.1', 'dnsNames[0]: "10.0.0.1" looks like an ip address, its last label must not be all digits'],
    ['10.0.0.1:443', 'dnsNames[0]: label "1:443" must be letters, digits and hyphens, not starting or ending with "-"'],
    [`${'a'.repeat(64)}.org`, `dnsNames[0]: label "${'a'.repeat(64)}" must be at most 63 characters`],
    [[...Array(4)].map(() => 'a'.repeat(62)).join('.') + '.ab', 'dnsNames[0]: must be at most 253 characters, got 254'],
  ])('refuses %j', (name, message) => {
    expect(() => validateDnsName(name, 'dnsNames[0]')).toThrow(
      expect.objectContaining({ code: 'ERR_PKI_INVALID_INPUT', message }),
    );
  });

  it('refuses non-strings, non-arrays and duplicates (case-insensitive), naming the index', () => {
    expect(() => validateDnsNames(['a.org', 7])).toThrow('dnsNames[1]: must be a string');
    expect(() => validateDnsNames('a.org' as unknown as string[])).toThrow('dnsNames: must be an array of strings');
    expect(() => validateDnsNames(['a.org', 'b.org', 'A.ORG'])).toThrow('dnsNames[2]: duplicate of dnsNames[0]');
    expect(validateDnsNames(undefined)).toEqual([]);
    expect(validateDnsNames(['b.org', 'a.org'])).toEqual(['b.org', 'a.org']);
  });
});

describe('serial numbers and TTLs', () => {
  it('generates 16-byte positive serials with a non-zero first byte', () => {
    const serials = Array.from({ length: 256 }, generateSerialNumber);
    for (const serial of serials) {
      expect(serial).toHaveLength(16);
      expect(serial[0]).toBeGreaterThanOrEqual(1);
      expect(serial[0]).toBeLessThanOrEqual(0x7f);
    }
    expect(new Set(serials.map((s) => Buffer.from(s).toString('hex'))).size).toBe(256);
  });

  it.each([
    [new Uint8Array(), 'serial: must be 1 to 20 bytes, got 0'],
    [new Uint8Array(21).fill(1), 'serial: must be 1 to 20 bytes, got 21'],
    [new Uint8Array([0x00, 0x01]), 'serial: first byte must be 0x01 to 0x7f (a positive integer without padding)'],
    [new Uint8Array([0x80, 0x01]), 'serial: first byte must be 0x01 to 0x7f (a positive integer without padding)'],
    ['0102', 'serial: must be a Uint8Array'],
  ])('refuses serial %j', (serial, message) => {
    expect(() => validateSerialNumber(serial)).toThrow(
      expect.objectContaining({ code: 'ERR_PKI_INVALID_INPUT', message }),
    );
  });

  it('accepts a 1-byte and a 20-byte serial, returning a copy', () => {
    const serial = new Uint8Array(20).fill(0x7f);
    const copy = validateSerialNumber(serial);
    expect(copy).toEqual(serial);
    expect(copy).not.toBe(serial);
    expect(validateSerialNumber(new Uint8Array([1]))).toEqual(new Uint8Array([1]));
  });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '60', 2 ** 53])('refuses ttlSeconds %j', (ttl) => {
    expect(() => validateTtlSeconds(ttl)).toThrow(
      `ttlSeconds: must be a positive integer number of seconds, got ${String(ttl)}`,
    );
  });
});

describe('subject and key identifier', () => {
  it('is O=Sigil, plus CN=<first DNS name> as PrintableString, or UTF8String for a wildcard', () => {
    expect(svidSubject([])).toEqual([{ oid: '2.5.4.10', value: 'Sigil', encoding: 'printableString' }]);
    expect(svidSubject(['web.example.org', 'x.example.org'])[1]).toEqual({
      oid: '2.5.4.3',
      value: 'web.example.org',
      encoding: 'printableString',
    });
    expect(svidSubject(['*.example.org'])[1]!.encoding).toBe('utf8String');
  });

  it('matches the encoding @peculiar/x509 picks by default for the same names', () => {
    for (const names of [[], ['web.example.org'], ['*.example.org']]) {
      const ours = new x509.Name(svidSubject(names).map((a) => ({ [a.oid]: [{ [a.encoding]: a.value }] })));
      const text = ['O=Sigil', ...names.slice(0, 1).map((n) => `CN=${n}`)].join(', ');
      expect(Buffer.from(ours.toArrayBuffer())).toEqual(Buffer.from(new x509.Name(text).toArrayBuffer()));
    }
  });

  it('computes the SKI by RFC 5280 method 1, as @peculiar/x509 does', async () => {
    for (const keyType of ['ec-p256', 'rsa-2048'] as const) {
      const { publicKey } = await generateKeyPair(keyType);
      const expected = await x509.SubjectKeyIdentifierExtension.create(publicKey);
      expect(Buffer.from(subjectKeyIdentifier(exportPublicKeySpki(publicKey))).toString('hex')).toBe(expected.keyId);
    }
    expect(() => subjectKeyIdentifier(new Uint8Array([0x30, 0x00]))).toThrow(
      expect.objectContaining({ code: 'ERR_DER_INVALID', message: 'spki: missing algorithm at offset 2' }),
    );
  });
});

describe('resolveSvidFields', () => {
  const trustDomain = TrustDomain.parse('example.org');
  const ca: SigningCaProfile = {
    subjectDer: new Uint8Array([0x30, 0x00]),
    spkiDer: new Uint8Array(),
    keyIdentifier: new Uint8Array(20),
    notAfter: new Date('2031-01-01T12:00:00Z'),
    trustDomain,
  };
  const spiffeId = SpiffeId.parse('spiffe://example.org/web');
  const now = new Date('2031-01-01T10:00:00.999Z');

  it('backdates not-before by 10 s and truncates both bounds to whole seconds', () => {
    const fields = resolveSvidFields({ spiffeId, ttlSeconds: 60, now }, ca);
    expect(fields.notBefore.toISOString()).toBe('2031-01-01T09:59:50.000Z');
    expect(fields.notAfter.toISOString()).toBe('2031-01-01T10:01:00.000Z');
    expect(fields.uri).toBe('spiffe://example.org/web');
  });

  it('caps not-after at the CA not-after', () => {
    const fields = resolveSvidFields({ spiffeId, ttlSeconds: 86_400, now }, ca);
    expect(fields.notAfter).toEqual(ca.notAfter);
  });

  it('refuses a root SPIFFE ID, another trust domain and an expired CA', () => {
    expect(() => resolveSvidFields({ spiffeId: trustDomain.id(), ttlSeconds: 60, now }, ca)).toThrow(
      'spiffeId: "spiffe://example.org" must have a path (an X.509-SVID never names a trust domain)',
    );
    const other = SpiffeId.parse('spiffe://other.org/web');
    expect(() => resolveSvidFields({ spiffeId: other, ttlSeconds: 60, now }, ca)).toThrow(
      `spiffeId: "spiffe://other.org/web" is not in the ca's trust domain "example.org"`,
    );
    expect(() => resolveSvidFields({ spiffeId, ttlSeconds: 60, now: ca.notAfter }, ca)).toThrow(
      expect.objectContaining({
        code: 'ERR_CA_INVALID',
        message: 'ca.certificate: expired at 2031-01-01T12:00:00.000Z, cannot sign',
      }),
    );
  });
});
