import { KeyObject, sign } from 'node:crypto';
import { generateKeyPair } from '@sigil/pki';
import {
  SpiffeError,
  SpiffeId,
  TrustBundle,
  TrustBundleSet,
  TrustDomain,
  parseAndValidateJwtSvid,
  parseInsecureJwtSvid,
  signJwtSvid,
} from '@sigil/spiffe';
import fc from 'fast-check';
import { anyString, jsonValue, mutatedJson, mutatedText } from '../arbitraries.js';
import { ContractViolation, Outcomes, runTarget, tryParse, type FuzzReport } from '../harness.js';

const NOW = new Date('2030-01-01T00:00:00Z');
const NOW_SECONDS = NOW.getTime() / 1000;
const ALLOWED = new Set(['RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512']);

const b64url = (value: unknown): string => Buffer.from(JSON.stringify(value) ?? 'null').toString('base64url');

const isDocumented = (error: unknown): boolean =>
  error instanceof SpiffeError && (error.code === 'ERR_JWT_SVID_INVALID' || error.code === 'ERR_BUNDLE_NOT_FOUND');

/**
 * JWT-SVIDs (libs/spiffe): `parseAndValidateJwtSvid` against a bundle set holding the signing key, and
 * `parseInsecureJwtSvid`, on valid tokens with mutated text, segments swapped for mutated JSON, and header and claims
 * mutated and then re-signed with the real key (so the claim checks behind the signature are reached), with
 * arbitrary expected audiences. Only `SpiffeError` `ERR_JWT_SVID_INVALID` / `ERR_BUNDLE_NOT_FOUND` may be thrown;
 * an accepted token is unexpired, has an allowed alg and a kid of the bundle, and contains the expected audience.
 */
export async function fuzzJwtSvid(runs: number): Promise<FuzzReport> {
  const example = TrustDomain.parse('example.org');
  const keys = await generateKeyPair('ec-p256');
  const privateKey = KeyObject.from(keys.privateKey);
  const jwk = KeyObject.from(keys.publicKey).export({ format: 'jwk' });
  const bundle = TrustBundle.create(example, { jwtAuthorities: [['kid-1', jwk]] });
  const source = new TrustBundleSet([bundle, TrustBundle.create(TrustDomain.parse('other.org'))]);
  const spiffeId = SpiffeId.parse('spiffe://example.org/ns/prod/sa/web');
  const tokens = await Promise.all(
    [['aud'], ['aud', 'other'], ['x']].map((audience) =>
      signJwtSvid({
        spiffeId,
        audience,
        expiresAt: new Date(NOW.getTime() + 300_000),
        issuedAt: NOW,
        privateKey: keys.privateKey,
        kid: 'kid-1',
        extraClaims: { custom: { nested: [1, 2] } },
      }),
    ),
  );
  const headers = [{ alg: 'ES256', kid: 'kid-1', typ: 'JWT' }];
  const claims = [
    { sub: spiffeId.toString(), aud: 'aud', exp: NOW_SECONDS + 300, iat: NOW_SECONDS },
    { sub: spiffeId.toString(), aud: ['aud', 'b'], exp: NOW_SECONDS + 1, nbf: NOW_SECONDS - 1 },
  ];
  const resign = (header: unknown, payload: unknown): string => {
    const input = `${b64url(header)}.${b64url(payload)}`;
    const signature = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
    return `${input}.${signature.toString('base64url')}`;
  };
  const segmentSwap = fc
    .tuple(fc.constantFrom(...tokens), fc.integer({ min: 0, max: 2 }), mutatedJson([...headers, ...claims], 3))
    .map(([token, index, json]) => {
      const parts = token.split('.');
      parts[index] = b64url(json);
      return parts.join('.');
    });
  // The time claims get their own mutations: a random slot of a random document rarely lands on them.
  const time = fc.oneof(
    fc.constantFrom(1e308, -1e308, 8.64e12, 8.64e12 + 1, -8.64e12, 0, -1, 0.5, Number.MAX_SAFE_INTEGER, 5e-324),
    fc.constantFrom(NOW_SECONDS - 1, NOW_SECONDS, NOW_SECONDS + 0.5, NOW_SECONDS + 300),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    jsonValue,
  );
  const timeClaims = fc
    .tuple(fc.constantFrom(...claims), fc.record({ exp: time, nbf: time, iat: time }, { requiredKeys: [] }))
    .map(([base, times]) => ({ ...base, ...times }));
  const header = fc.oneof(
    mutatedJson(headers, 2),
    fc.record(
      {
        alg: fc.oneof(fc.constantFrom('ES256', 'none', 'HS256', 'RS256', 'PS512'), jsonValue),
        kid: jsonValue,
        typ: jsonValue,
      },
      { requiredKeys: [] },
    ),
  );
  const token = fc.oneof(
    { weight: 2, arbitrary: fc.tuple(header, timeClaims).map(([h, c]) => resign(h, c)) },
    { weight: 3, arbitrary: fc.tuple(mutatedJson(headers, 2), mutatedJson(claims, 3)).map(([h, c]) => resign(h, c)) },
    { weight: 2, arbitrary: mutatedText(tokens, 3) },
    { weight: 2, arbitrary: segmentSwap },
    { weight: 1, arbitrary: anyString },
  );
  const audience = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom<string | readonly string[]>('aud', ['x', 'aud'], 'other') },
    { weight: 1, arbitrary: jsonValue as fc.Arbitrary<string> },
  );
  const outcomes = new Outcomes();
  return runTarget(
    'jwt-svid',
    fc.tuple(token, audience),
    async ([text, expected]) => {
      const validated = await tryParse('parseAndValidateJwtSvid', isDocumented, () =>
        parseAndValidateJwtSvid(text, source, expected, { now: NOW }),
      );
      const insecure = await tryParse('parseInsecureJwtSvid', isDocumented, () =>
        parseInsecureJwtSvid(text, expected, { now: NOW }),
      );
      outcomes.add(validated ? 'validated' : insecure ? 'insecure parse only' : 'refused');
      if (validated === undefined) return;
      if (insecure === undefined) throw new ContractViolation('a validated token fails the insecure parse');
      const header = JSON.parse(Buffer.from(text.split('.')[0] as string, 'base64url').toString('utf8')) as {
        alg?: unknown;
        kid?: unknown;
      };
      const list = typeof expected === 'string' ? [expected] : expected;
      if (
        !ALLOWED.has(String(header.alg)) ||
        header.kid !== 'kid-1' ||
        !validated.spiffeId.isMemberOf(example) ||
        !(validated.expiry.getTime() > NOW.getTime()) ||
        !list.some((value) => validated.audience.includes(value))
      ) {
        throw new ContractViolation(`accepted a token that breaks a rule: ${JSON.stringify(validated.claims)}`);
      }
    },
    runs,
    outcomes,
  );
}
