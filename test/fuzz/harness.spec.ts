import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deeplyNested, mutatedBytes, mutatedJson } from './arbitraries.js';
import { runTarget, tryParse } from './harness.js';

class DocumentedError extends Error {}
const isDocumented = (error: unknown): boolean => error instanceof DocumentedError;

// The harness must be able to fail: a parser with a crash, a wrong error type or a hang is reported.
describe('fuzz harness', () => {
  it('reports a parser that throws an undocumented error, with the shrunk counterexample', async () => {
    const parse = (n: number): number => {
      if (n > 1000) throw new TypeError('boom');
      if (n < 0) throw new DocumentedError('negative');
      return n;
    };
    const report = await runTarget(
      't',
      fc.integer(),
      (n) => tryParse('parse', isDocumented, () => parse(n)).then(() => undefined),
      2000,
    );
    expect(report.failure).toMatch(/counterexample \[1001\][\s\S]*parse threw an undocumented error: TypeError: boom/);
  });

  it('passes a parser that throws only its documented error', async () => {
    const report = await runTarget(
      't',
      fc.integer(),
      async (n) => {
        await tryParse('parse', isDocumented, () => {
          if (n % 2) throw new DocumentedError('odd');
        });
      },
      500,
    );
    expect(report).toMatchObject({ failure: undefined, cases: 500 });
  });

  it('reports a case slower than the per-case bound as a hang, and one that never settles', async () => {
    const slow = () => new Promise<void>((resolve) => setTimeout(resolve, 150));
    const report = await runTarget('t', fc.constant(0), slow, 1, undefined, 100);
    expect(report.failure).toMatch(/case took \d+ ms, over the 100 ms bound/);
    const never = () => new Promise<void>(() => undefined);
    expect((await runTarget('t', fc.constant(0), never, 1, undefined, 100)).failure).toMatch(/timeout/i);
  });

  it('mutates valid inputs rather than replacing them', () => {
    const sample = Uint8Array.from({ length: 64 }, (_, i) => i);
    const values = fc.sample(mutatedBytes([sample], 2), { numRuns: 200, seed: 1 });
    expect(values.some((value) => Buffer.from(value).equals(sample))).toBe(true);
    expect(values.filter((value) => !Buffer.from(value).equals(sample)).length).toBeGreaterThan(100);
    const documents = fc.sample(mutatedJson([{ a: [1, 2], b: { c: 'x' } }], 2), { numRuns: 200, seed: 1 });
    expect(new Set(documents.map((document) => JSON.stringify(document))).size).toBeGreaterThan(50);
    expect(JSON.parse(deeplyNested(100_000, 'array'))).toBeInstanceOf(Array);
  });
});
