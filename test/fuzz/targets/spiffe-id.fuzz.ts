import { SpiffeError, SpiffeId, TrustDomain } from '@sigil/spiffe';
import fc from 'fast-check';
import { anyString, mutatedText } from '../arbitraries.js';
import { ContractViolation, runTarget, tryParse, type FuzzReport } from '../harness.js';

const ID_SHAPE = /^spiffe:\/\/[a-z0-9._-]{1,255}(\/[a-zA-Z0-9._-]+)*$/;
const TRUST_DOMAIN_SHAPE = /^[a-z0-9._-]{1,255}$/;

const SAMPLES = [
  'spiffe://example.org/ns/prod/sa/web',
  'spiffe://example.org',
  'SPIFFE://Example.ORG/Path/To/X',
  'spiffe://a.b-c_d.0/x.y/z-1/_',
  'spiffe://example.org/sigil/agent/join_token/1234',
  `spiffe://${'a'.repeat(255)}/${'b'.repeat(1700)}`,
  'example.org',
  'spiffe://user@example.org:8080/path?q=1#frag',
  'spiffe://example.org/%41/../.',
];

const isIdError = (error: unknown): boolean => error instanceof SpiffeError && error.code === 'ERR_SPIFFE_ID_INVALID';
const isTrustDomainError = (error: unknown): boolean =>
  error instanceof SpiffeError && error.code === 'ERR_TRUST_DOMAIN_INVALID';

function check(condition: boolean, message: string): void {
  if (!condition) throw new ContractViolation(message);
}

/**
 * SPIFFE IDs and trust domains (libs/spiffe): `SpiffeId.parse`, `TrustDomain.parse`, `SpiffeId.fromPath` and
 * `fromSegments` on mutated valid IDs and arbitrary strings. Only `SpiffeError` with the ID or trust-domain code may
 * be thrown; whatever is accepted has the standard's shape, at most 2048 bytes, and parses back to itself.
 */
export async function fuzzSpiffeId(runs: number): Promise<FuzzReport> {
  const input = fc.oneof({ weight: 3, arbitrary: mutatedText(SAMPLES, 4) }, { weight: 1, arbitrary: anyString });
  const segments = fc.array(fc.oneof(mutatedText(['web', 'ns', '..', '.', 'a-b_c.d'], 2), anyString), { maxLength: 5 });
  return runTarget(
    'spiffe-id',
    fc.tuple(input, segments),
    async ([text, parts]) => {
      const id = await tryParse('SpiffeId.parse', isIdError, () => SpiffeId.parse(text));
      if (id !== undefined) {
        const emitted = id.toString();
        check(ID_SHAPE.test(emitted), `accepted ${emitted}, which breaks the id rules`);
        check(!/\/\.\.?(\/|$)/.test(id.path), `accepted dot segment in ${emitted}`);
        check(Buffer.byteLength(emitted) <= 2048, `accepted ${emitted.length} bytes`);
        check(SpiffeId.parse(emitted).equals(id), `${emitted} does not parse back to itself`);
      }
      const trustDomain = await tryParse('TrustDomain.parse', isTrustDomainError, () => TrustDomain.parse(text));
      if (trustDomain !== undefined) {
        check(TRUST_DOMAIN_SHAPE.test(trustDomain.name), `accepted trust domain ${trustDomain.name}`);
        check(TrustDomain.parse(trustDomain.idString()).equals(trustDomain), 'trust domain does not round-trip');
      }
      const td = trustDomain ?? TrustDomain.parse('example.org');
      const fromPath = await tryParse('SpiffeId.fromPath', isIdError, () => SpiffeId.fromPath(td, text));
      if (fromPath !== undefined) check(SpiffeId.parse(fromPath.toString()).equals(fromPath), 'fromPath round-trip');
      const fromSegments = await tryParse('SpiffeId.fromSegments', isIdError, () =>
        SpiffeId.fromSegments(td, ...parts),
      );
      if (fromSegments !== undefined) {
        check(ID_SHAPE.test(fromSegments.toString()), `fromSegments built ${fromSegments.toString()}`);
      }
    },
    runs,
  );
}
