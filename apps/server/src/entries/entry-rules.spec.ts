import { X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import {
  createRootCa,
  exportPublicKeySpki,
  generateKeyPair,
  PkiError,
  validateDnsName,
  X509SvidSigner,
} from '@sigil/pki';
import { SpiffeId, TrustBundle, TrustDomain, verifyX509Svid } from '@sigil/spiffe';
import { beforeAll, describe, expect, it } from 'vitest';
import { AppError } from '../common/errors.js';
import type { EntryInput } from './entry.js';
import { ENTRY_LIMITS, validateEntry, type ValidEntryFields } from './entry-rules.js';

const TRUST_DOMAIN = TrustDomain.parse('example.org');
const NOW = new Date('2030-01-01T00:00:00Z');
const CONTEXT = { trustDomain: TRUST_DOMAIN, now: NOW, checkExpiry: true };

const entry = (fields: Partial<EntryInput> = {}): EntryInput => ({
  spiffeId: 'spiffe://example.org/web',
  parentId: 'spiffe://example.org/sigil/agent/join_token/a1',
  selectors: [{ type: 'unix', value: 'uid:1000' }],
  ...fields,
});

/** The registry's verdict on one list of DNS names: the stored names, or the error message. */
function registryVerdict(dnsNames: unknown[]): { dnsNames: string[] } | { error: string } {
  try {
    return { dnsNames: validateEntry(entry({ dnsNames: dnsNames as string[] }), CONTEXT).dnsNames };
  } catch (error) {
    if (error instanceof AppError && error.kind === 'invalid_argument') return { error: error.message };
    throw error;
  }
}

describe('entry DNS names: one rule with the signer (libs/pki)', () => {
  it.each([
    ['web.example.org', 'web.example.org'],
    ['Web.Example.ORG', 'web.example.org'],
    ['*.example.org', '*.example.org'],
    ['*.svc.cluster.local', '*.svc.cluster.local'],
    ['localhost', 'localhost'],
    ['1password.com', '1password.com'],
    ['123.example.org', '123.example.org'],
    ['web-1.prod.example.org', 'web-1.prod.example.org'],
    ['xn--ls8h.org', 'xn--ls8h.org'],
    [`${'a'.repeat(63)}.example.org`, `${'a'.repeat(63)}.example.org`],
  ])('accepts %j (stored as %j)', (name, stored) => {
    expect(registryVerdict([name])).toEqual({ dnsNames: [stored] });
  });

  it.each([
    ['web.123', 'dns_names.0: "web.123" looks like an ip address, its last label must not be all digits'],
    ['10.0.0.1', 'dns_names.0: "10.0.0.1" looks like an ip address, its last label must not be all digits'],
    ['*.com', 'dns_names.0: wildcard "*.com" must cover at least two labels, as in *.example.org'],
    ['*.localhost', 'dns_names.0: wildcard "*.localhost" must cover at least two labels, as in *.example.org'],
    ['*', 'dns_names.0: wildcard "*" must be followed by a host name'],
    ['*.', 'dns_names.0: "*." has an empty label'],
    ['web.*.example.org', 'dns_names.0: "web.*.example.org" may only use "*" as the whole first label'],
    ['*.*.example.org', 'dns_names.0: "*.*.example.org" may only use "*" as the whole first label'],
    ['w*.example.org', 'dns_names.0: "w*.example.org" may only use "*" as the whole first label'],
    ['web.example.org.', 'dns_names.0: "web.example.org." has an empty label'],
    ['', 'dns_names.0: cannot be empty'],
    [
      'we_b.example.org',
      'dns_names.0: label "we_b" must be letters, digits and hyphens, not starting or ending with "-"',
    ],
    [
      '-web.example.org',
      'dns_names.0: label "-web" must be letters, digits and hyphens, not starting or ending with "-"',
    ],
    [
      'wéb.example.org',
      'dns_names.0: label "wéb" must be letters, digits and hyphens, not starting or ending with "-"',
    ],
    [
      '\u212a8s.example.org',
      'dns_names.0: label "\u212a8s" must be letters, digits and hyphens, not starting or ending with "-"',
    ],
    [' web.org', 'dns_names.0: label " web" must be letters, digits and hyphens, not starting or ending with "-"'],
    [`${'a'.repeat(64)}.org`, `dns_names.0: label "${'a'.repeat(64)}" must be at most 63 characters`],
  ])('refuses %j', (name, message) => {
    expect(registryVerdict([name])).toEqual({ error: message });
  });

  it('refuses duplicates (case-insensitive), non-strings and too many names, naming the index', () => {
    expect(registryVerdict(['a.org', 'A.org'])).toEqual({ error: 'dns_names.1: duplicate dns name "a.org"' });
    expect(registryVerdict(['a.org', 7])).toEqual({ error: 'dns_names.1: must be a string' });
    const many = Array.from({ length: ENTRY_LIMITS.maxDnsNames + 1 }, (_, i) => `h${i}.org`);
    expect(registryVerdict(many)).toEqual({ error: `dns_names: at most ${ENTRY_LIMITS.maxDnsNames} names, got 33` });
  });

  describe('every entry the registry accepts can be signed by the real signer (property)', () => {
    let signer: X509SvidSigner;
    let bundle: TrustBundle;
    let spkiDer: Uint8Array;

    beforeAll(async () => {
      const ca = await createRootCa({ trustDomain: TRUST_DOMAIN, keys: await generateKeyPair(), now: NOW });
      signer = X509SvidSigner.create({ certificate: ca.certificate, privateKey: ca.privateKey });
      bundle = TrustBundle.fromX509Der(TRUST_DOMAIN, new Uint8Array(ca.certificate.rawData));
      spkiDer = exportPublicKeySpki((await generateKeyPair()).publicKey);
    });

    // Labels built from the characters DNS rules disagree about: digits, hyphens, '*', '_', case, non-ASCII, space.
    const label = fc.oneof(
      { weight: 6, arbitrary: fc.stringMatching(/^[a-z][a-z0-9-]{0,8}[a-z0-9]$/) },
      { weight: 2, arbitrary: fc.stringMatching(/^[0-9]{1,4}$/) },
      { weight: 3, arbitrary: fc.string({ unit: fc.constantFrom(...'aZ09-_*é .'), minLength: 0, maxLength: 6 }) },
      { weight: 1, arbitrary: fc.constantFrom('*', 'xn--ls8h', 'a'.repeat(63), 'a'.repeat(64)) },
    );
    const dnsName = fc
      .tuple(fc.boolean(), fc.array(label, { minLength: 1, maxLength: 5 }))
      .map(([wildcard, labels]) => `${wildcard ? '*.' : ''}${labels.join('.')}`);
    const candidate = fc.record({
      path: fc.stringMatching(/^\/[a-z0-9]{1,8}(\/[a-z0-9._-]{1,8}){0,2}$/),
      dnsNames: fc.array(dnsName, { maxLength: 4 }),
      x509SvidTtl: fc.constantFrom(0, 60, 3600, 86_400),
    });

    const accepted = (input: EntryInput): ValidEntryFields | undefined => {
      try {
        return validateEntry(input, CONTEXT);
      } catch (error) {
        if (error instanceof AppError && error.kind === 'invalid_argument') return undefined;
        throw error;
      }
    };

    it('signs an X509-SVID carrying exactly the stored DNS names', async () => {
      let signed = 0;
      await fc.assert(
        fc.asyncProperty(candidate, async ({ path, dnsNames, x509SvidTtl }) => {
          const fields = accepted(entry({ spiffeId: `spiffe://example.org${path}`, dnsNames, x509SvidTtl }));
          if (!fields) return;
          signed++;
          const leaf = signer.sign({
            spkiDer,
            spiffeId: SpiffeId.parse(fields.spiffeId),
            dnsNames: fields.dnsNames,
            ttlSeconds: fields.x509SvidTtl || 3600,
            now: NOW,
          });
          const verified = await verifyX509Svid([leaf], bundle, { now: NOW });
          expect(verified.spiffeId.toString()).toBe(fields.spiffeId);
          const sans = new X509Certificate(leaf).subjectAltName?.split(', ') ?? [];
          expect(sans.filter((san) => san.startsWith('DNS:'))).toEqual(fields.dnsNames.map((name) => `DNS:${name}`));
        }),
        { numRuns: 400 },
      );
      // The generator must reach the interesting side too: a property over refused entries only proves nothing.
      expect(signed).toBeGreaterThan(40);
    });

    it('refuses exactly the names the signer refuses', () => {
      fc.assert(
        fc.property(dnsName, (name) => {
          const registry = registryVerdict([name]);
          let signerAccepts = true;
          try {
            validateDnsName(name);
          } catch (error) {
            if (!(error instanceof PkiError)) throw error;
            signerAccepts = false;
          }
          expect({ name, registryAccepts: 'dnsNames' in registry }).toEqual({ name, registryAccepts: signerAccepts });
        }),
        { numRuns: 3000 },
      );
    });
  });
});
