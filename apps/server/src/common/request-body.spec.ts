import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AppError } from './errors.js';
import { createJsonBodyParser, exceedsJsonDepth, MAX_JSON_DEPTH } from './request-body.js';

const bytes = (text: string): Buffer => Buffer.from(text, 'utf8');

/** Nesting depth of a parsed JSON value, the slow and obvious way (test oracle). */
function depthOf(value: unknown): number {
  if (typeof value !== 'object' || value === null) return 0;
  const children = Array.isArray(value) ? value : Object.values(value);
  return 1 + Math.max(0, ...children.map(depthOf));
}

describe('exceedsJsonDepth', () => {
  it.each([
    ['1', 0, false],
    ['[]', 1, false],
    ['[]', 0, true],
    ['{"a":[{"b":[]}]}', 4, false],
    ['{"a":[{"b":[]}]}', 3, true],
    ['[[],[],[[]]]', 3, false],
    ['[[],[],[[]]]', 2, true],
    // Brackets in strings, escaped quotes and non-ASCII text do not count.
    ['["[[[[", "\\"[[[", "\\\\", "é{{{"]', 1, false],
    ['{"k\\"[[":"}}}]]"}', 1, false],
  ])('%s with a limit of %i: %s', (text, limit, expected) => {
    expect(exceedsJsonDepth(bytes(text), limit)).toBe(expected);
  });

  it('handles a megabyte of brackets without recursing', () => {
    expect(exceedsJsonDepth(bytes('['.repeat(1024 * 1024)), MAX_JSON_DEPTH)).toBe(true);
  });

  it('agrees with the depth of the parsed value for any JSON text (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 12 }), fc.integer({ min: 0, max: 12 }), (value, limit) => {
        const text = JSON.stringify(value);
        expect(exceedsJsonDepth(bytes(text), limit)).toBe(depthOf(value) > limit);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('createJsonBodyParser', () => {
  const jsonParse = (_request: unknown, body: Buffer, done: (error: Error | null, value?: unknown) => void) => {
    try {
      done(null, JSON.parse(body.toString('utf8')));
    } catch (error) {
      done(error as Error);
    }
  };
  const parser = createJsonBodyParser(jsonParse);
  const run = (text: string) =>
    new Promise<{ error: Error | null; value?: unknown }>((resolve) =>
      parser({} as never, bytes(text), (error, value) => resolve({ error, value })),
    );

  it('passes objects up to the depth limit through to the parser', async () => {
    const atLimit = `${'{"a":'.repeat(MAX_JSON_DEPTH)}1${'}'.repeat(MAX_JSON_DEPTH)}`;
    expect((await run(atLimit)).error).toBeNull();
    expect(await run('{"entries":[]}')).toEqual({ error: null, value: { entries: [] } });
  });

  it('refuses deeper bodies before parsing, and any JSON value but an object', async () => {
    const tooDeep = `${'['.repeat(MAX_JSON_DEPTH + 1)}${']'.repeat(MAX_JSON_DEPTH + 1)}`;
    expect((await run(tooDeep)).error).toEqual(
      new AppError('invalid_argument', `request body: nested deeper than ${MAX_JSON_DEPTH} levels`),
    );
    for (const text of ['null', '[]', '"x"', '1', 'true']) {
      expect((await run(text)).error).toEqual(new AppError('invalid_argument', 'request body: must be a JSON object'));
    }
  });

  it("keeps the parser's own errors", async () => {
    expect((await run('{"a":')).error).toBeInstanceOf(SyntaxError);
  });
});
