import { sign, KeyObject } from 'node:crypto';
import {
  PEM_LABEL,
  PkiError,
  createCsr,
  createCsrFast,
  exportPublicKeySpki,
  generateKeyPair,
  parseCsrFast,
  parseCsrFastAsync,
  toPem,
  type KeyType,
} from '@sigil/pki';
import { SpiffeId } from '@sigil/spiffe';
import fc from 'fast-check';
import { readDerElement } from '../../../libs/pki/src/der-reader.js';
import { derBitString, derSequence } from '../../../libs/pki/src/der-writer.js';
import { ALGORITHM_IDENTIFIERS } from '../../../libs/pki/src/oids.js';
import { parseCsrReference } from '../../support/pki-reference/csr.js';
import { anyString, mutatedBytes, mutatedText } from '../arbitraries.js';
import { ContractViolation, Outcomes, runTarget, tryParse, type FuzzReport } from '../harness.js';

interface Sample {
  readonly keyType: KeyType;
  readonly privateKey: KeyObject;
  readonly der: Uint8Array;
}

const HASH: Record<KeyType, 'sha256' | 'sha384'> = { 'ec-p256': 'sha256', 'ec-p384': 'sha384', 'rsa-2048': 'sha256' };
const ALGORITHM: Record<KeyType, Buffer> = {
  'ec-p256': ALGORITHM_IDENTIFIERS.ecdsaWithSha256,
  'ec-p384': ALGORITHM_IDENTIFIERS.ecdsaWithSha384,
  'rsa-2048': ALGORITHM_IDENTIFIERS.sha256WithRsaEncryption,
};
const CONTEXT = { name: 'fuzz', code: 'ERR_DER_INVALID' as const };

async function samples(): Promise<Sample[]> {
  const id = SpiffeId.parse('spiffe://example.org/ns/prod/sa/web');
  const out: Sample[] = [];
  for (const keyType of ['ec-p256', 'ec-p384', 'rsa-2048'] as const) {
    const keys = await generateKeyPair(keyType);
    const privateKey = KeyObject.from(keys.privateKey);
    const spkiDer = exportPublicKeySpki(keys.publicKey);
    out.push({ keyType, privateKey, der: (await createCsr({ keys })).der });
    out.push({
      keyType,
      privateKey,
      der: (await createCsr({ keys, spiffeId: id, dnsNames: ['web.example.org'] })).der,
    });
    out.push({ keyType, privateKey, der: createCsrFast({ privateKey, spkiDer, spiffeId: id }) });
    out.push({
      keyType,
      privateKey,
      der: createCsrFast({ privateKey, spkiDer, spiffeId: id, dnsNames: ['a.example.org', '*.b.example.org'] }),
    });
  }
  return out;
}

/** The CertificationRequestInfo of a request, re-signed after mutation so the signature check passes. */
function infoOf(der: Uint8Array): Uint8Array {
  const outer = readDerElement(der, 0, der.length, CONTEXT);
  const info = readDerElement(der, outer.contentStart, outer.end, CONTEXT);
  return der.subarray(info.start, info.end);
}

function resign(sample: Sample, info: Uint8Array): Uint8Array {
  const signature = sign(HASH[sample.keyType], info, { key: sample.privateKey, dsaEncoding: 'der' });
  return derSequence(info, ALGORITHM[sample.keyType], derBitString(signature));
}

/** PEM armour of any bytes, even empty ones (toPem refuses those). */
function armour(der: Uint8Array): string {
  const lines =
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE REQUEST-----\n${lines.join('\n')}\n-----END CERTIFICATE REQUEST-----\n`;
}

type Input = { readonly kind: 'der'; readonly der: Uint8Array } | { readonly kind: 'pem'; readonly pem: string };

const isCsrError = (error: unknown): boolean => error instanceof PkiError && error.code === 'ERR_CSR_INVALID';

function same(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}

/**
 * CSRs (libs/pki): `parseCsrFast`, `parseCsrFastAsync` and the @peculiar/x509 reference parser (test support) on the same input — DER and PEM of valid
 * requests with bytes flipped, truncated, extended or spliced (some re-signed after mutating the
 * CertificationRequestInfo, so the name and key paths behind the signature are reached), mutated PEM text, random
 * bytes and strings. Only `PkiError` `ERR_CSR_INVALID` may be thrown; the sync and async fast parsers agree; what the
 * fast parser accepts, @peculiar/x509's parser accepts with the same key and names (the fast one is the stricter).
 */
export async function fuzzCsr(runs: number): Promise<FuzzReport> {
  const all = await samples();
  const ders = all.map((sample) => sample.der);
  const pems = ders.map((der) => toPem(PEM_LABEL.certificateRequest, der));
  const resigned = fc
    .tuple(fc.constantFrom(...all), fc.nat())
    .chain(([sample]) => mutatedBytes([infoOf(sample.der)], 3).map((info) => resign(sample, info)));
  const input: fc.Arbitrary<Input> = fc.oneof(
    { weight: 4, arbitrary: mutatedBytes(ders, 4).map((der) => ({ kind: 'der' as const, der })) },
    { weight: 3, arbitrary: resigned.map((der) => ({ kind: 'der' as const, der })) },
    {
      weight: 1,
      arbitrary: mutatedBytes(ders, 2).map((der) => ({ kind: 'pem' as const, pem: armour(der) })),
    },
    { weight: 2, arbitrary: mutatedText(pems, 3).map((pem) => ({ kind: 'pem' as const, pem })) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((der) => ({ kind: 'der' as const, der })) },
    { weight: 1, arbitrary: anyString.map((pem) => ({ kind: 'pem' as const, pem })) },
  );
  const outcomes = new Outcomes();
  return runTarget(
    'csr',
    input,
    async (value) => {
      const raw = value.kind === 'der' ? value.der : value.pem;
      const fast = await tryParse('parseCsrFast', isCsrError, () => parseCsrFast(raw));
      let asyncError: unknown;
      const fastAsync = await parseCsrFastAsync(raw).catch((error: unknown) => {
        asyncError = error;
        return undefined;
      });
      if (asyncError !== undefined) {
        await tryParse('parseCsrFastAsync', isCsrError, () => Promise.reject(asyncError));
      }
      if ((fast === undefined) !== (fastAsync === undefined)) {
        throw new ContractViolation(
          `parseCsrFast ${fast ? 'accepted' : 'refused'} but parseCsrFastAsync ${fastAsync ? 'accepted' : `refused: ${String(asyncError)}`}`,
        );
      }
      const reference = await tryParse('parseCsrReference', isCsrError, () => parseCsrReference(raw));
      outcomes.add(`fast ${fast ? 'accepted' : 'refused'}, reference ${reference ? 'accepted' : 'refused'}`);
      if (fast === undefined) return;
      if (reference === undefined)
        throw new ContractViolation('parseCsrFast accepted a CSR that parseCsrReference refuses');
      if (
        !Buffer.from(reference.spkiDer).equals(fast.spkiDer) ||
        !same(reference.uris, fast.uris) ||
        !same(reference.dnsNames, fast.dnsNames) ||
        !fastAsync?.spkiDer.equals(fast.spkiDer)
      ) {
        throw new ContractViolation(
          `parsers disagree: fast ${JSON.stringify([fast.uris, fast.dnsNames])} reference ${JSON.stringify([reference.uris, reference.dnsNames])}`,
        );
      }
    },
    runs,
    outcomes,
  );
}

// Exported for the regression specs, which rebuild a counterexample from its mutated CertificationRequestInfo.
export { infoOf, resign, samples as csrSamples, type Sample as CsrSample };
