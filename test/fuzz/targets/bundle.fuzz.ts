import { KeyObject } from 'node:crypto';
import { createRootCa, generateKeyPair } from '@sigil/pki';
import { SpiffeError, TrustBundle, TrustDomain } from '@sigil/spiffe';
import fc from 'fast-check';
import { anyString, jsonText, mutatedBytes, mutatedJson, mutatedText } from '../arbitraries.js';
import { ContractViolation, Outcomes, runTarget, tryParse, type FuzzReport } from '../harness.js';

type Input =
  | { readonly kind: 'jwks-text'; readonly text: string }
  | { readonly kind: 'jwks-bytes'; readonly bytes: Uint8Array }
  | { readonly kind: 'jwks-object'; readonly document: unknown }
  | { readonly kind: 'pem'; readonly text: string }
  | { readonly kind: 'der'; readonly bytes: Uint8Array };

const isBundleError = (error: unknown): boolean => error instanceof SpiffeError && error.code === 'ERR_BUNDLE_INVALID';

/**
 * Trust bundles (libs/spiffe): `TrustBundle.parseJwks` on JSON text, UTF-8 bytes and parsed documents (valid SPIFFE
 * bundles with fields of the wrong type, removed, nested deeply, text cut or spliced), `fromX509Pem` and
 * `fromX509Der` on mutated certificates. Only `SpiffeError` `ERR_BUNDLE_INVALID` may be thrown, and a bundle that
 * parsed survives `toJwks` and parses back to an equal bundle.
 */
export async function fuzzBundle(runs: number): Promise<FuzzReport> {
  const td = TrustDomain.parse('example.org');
  const ca = await createRootCa({ trustDomain: td, keys: await generateKeyPair('ec-p256'), now: new Date() });
  const rsaCa = await createRootCa({ trustDomain: td, keys: await generateKeyPair('rsa-2048'), now: new Date() });
  const ecJwk = KeyObject.from((await generateKeyPair('ec-p384')).publicKey).export({ format: 'jwk' });
  const rsaJwk = KeyObject.from((await generateKeyPair('rsa-2048')).publicKey).export({ format: 'jwk' });
  const bundle = TrustBundle.create(td, {
    x509Authorities: [ca.der, rsaCa.der],
    jwtAuthorities: [
      ['ec', ecJwk],
      ['rsa', rsaJwk],
    ],
    sequenceNumber: 7,
    refreshHintSeconds: 300,
  });
  const documents = [
    bundle.toJwks(),
    { keys: [{ use: 'x509-svid', kty: 'EC', x5c: [Buffer.from(ca.der).toString('base64')] }] },
    {
      keys: [
        { use: 'jwt-svid', kid: 'k', ...ecJwk },
        { use: 'other', kty: 'OKP' },
        { use: 'jwt-svid', kid: 'x', kty: 'oct' },
      ],
    },
  ] as unknown[];
  const text = documents.map((document) => JSON.stringify(document));
  const ders = [ca.der, rsaCa.der, bundle.x509Der()];
  const input: fc.Arbitrary<Input> = fc.oneof(
    { weight: 4, arbitrary: mutatedJson(documents, 3).map((document) => ({ kind: 'jwks-object' as const, document })) },
    { weight: 3, arbitrary: jsonText(mutatedJson(documents, 2)).map((text) => ({ kind: 'jwks-text' as const, text })) },
    {
      weight: 1,
      arbitrary: mutatedBytes(
        text.map((each) => Buffer.from(each)),
        3,
      ).map((bytes) => ({ kind: 'jwks-bytes' as const, bytes })),
    },
    { weight: 2, arbitrary: mutatedText([bundle.x509Pem()], 3).map((text) => ({ kind: 'pem' as const, text })) },
    { weight: 2, arbitrary: mutatedBytes(ders, 4).map((bytes) => ({ kind: 'der' as const, bytes })) },
    { weight: 1, arbitrary: anyString.map((text) => ({ kind: 'jwks-text' as const, text })) },
  );
  const outcomes = new Outcomes();
  return runTarget(
    'bundle',
    input,
    async (value) => {
      const parsed = await tryParse(`TrustBundle (${value.kind})`, isBundleError, () => {
        switch (value.kind) {
          case 'jwks-text':
            return TrustBundle.parseJwks(td, value.text);
          case 'jwks-bytes':
            return TrustBundle.parseJwks(td, value.bytes);
          case 'jwks-object':
            return TrustBundle.parseJwks(td, value.document as object);
          case 'pem':
            return TrustBundle.fromX509Pem(td, value.text);
          case 'der':
            return TrustBundle.fromX509Der(td, value.bytes);
        }
      });
      outcomes.add(`${value.kind} ${parsed ? 'parsed' : 'refused'}`);
      if (parsed === undefined) return;
      const again = await tryParse(
        'TrustBundle.parseJwks (round trip)',
        () => false,
        () => TrustBundle.parseJwks(td, parsed.toJson()),
      );
      if (!again?.equals(parsed)) throw new ContractViolation('a parsed bundle does not survive toJwks and parseJwks');
    },
    runs,
    outcomes,
  );
}
