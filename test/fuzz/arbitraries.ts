import fc from 'fast-check';

/**
 * Structured arbitraries: valid inputs with bytes flipped, truncated, extended or spliced, JSON documents with wrong
 * types and deep nesting, so the parsers' deep paths are reached and not only their first length check.
 */

type ByteMutation =
  | { readonly kind: 'flip'; readonly at: number; readonly bit: number }
  | { readonly kind: 'set'; readonly at: number; readonly byte: number }
  | { readonly kind: 'truncate'; readonly at: number }
  | { readonly kind: 'insert'; readonly at: number; readonly bytes: Uint8Array }
  | { readonly kind: 'delete'; readonly at: number; readonly count: number }
  | { readonly kind: 'duplicate'; readonly at: number; readonly count: number }
  | { readonly kind: 'append'; readonly bytes: Uint8Array };

// Positions are fractions of the length, so one mutation list applies to inputs of any size.
const position = fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true });
const interesting = fc.constantFrom(
  0x00,
  0x01,
  0x7f,
  0x80,
  0x81,
  0x82,
  0x84,
  0xff,
  0x30,
  0x31,
  0x02,
  0x03,
  0x04,
  0x05,
  0x06,
  0xa0,
  0x86,
);

const byteMutation: fc.Arbitrary<ByteMutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: position, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({
    kind: fc.constant('set' as const),
    at: position,
    byte: fc.oneof(interesting, fc.integer({ min: 0, max: 255 })),
  }),
  fc.record({ kind: fc.constant('truncate' as const), at: position }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: position,
    bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
  }),
  fc.record({ kind: fc.constant('delete' as const), at: position, count: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ kind: fc.constant('duplicate' as const), at: position, count: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ kind: fc.constant('append' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
);

function applyByteMutation(input: Uint8Array, mutation: ByteMutation): Uint8Array {
  const at = mutation.kind === 'append' ? input.length : Math.floor(mutation.at * input.length);
  const out = Buffer.from(input);
  switch (mutation.kind) {
    case 'flip':
      if (at < out.length) out[at] = (out[at] as number) ^ (1 << mutation.bit);
      return out;
    case 'set':
      if (at < out.length) out[at] = mutation.byte;
      return out;
    case 'truncate':
      return out.subarray(0, at);
    case 'insert':
      return Buffer.concat([out.subarray(0, at), mutation.bytes, out.subarray(at)]);
    case 'delete':
      return Buffer.concat([out.subarray(0, at), out.subarray(at + mutation.count)]);
    case 'duplicate':
      return Buffer.concat([out.subarray(0, at + mutation.count), out.subarray(at)]);
    case 'append':
      return Buffer.concat([out, mutation.bytes]);
  }
}

/** One of `samples` with 0 to `max` byte mutations applied (0 keeps the valid input in the mix). */
export function mutatedBytes(samples: readonly Uint8Array[], max = 4): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(fc.constantFrom(...samples), fc.array(byteMutation, { maxLength: max }))
    .map(([sample, mutations]) => new Uint8Array(mutations.reduce(applyByteMutation, Uint8Array.from(sample))));
}

/** Text characters that matter to the parsers: separators, base64 and PEM armour, controls, non-ASCII. */
const interestingText = fc.constantFrom(
  '.',
  ':',
  '/',
  '//',
  '-',
  '_',
  '=',
  '+',
  '%',
  '?',
  '#',
  '@',
  '[',
  ']',
  '{',
  '}',
  '"',
  '\\',
  ' ',
  '\n',
  '\r\n',
  '\t',
  '\0',
  '\u007f',
  'é',
  '\u2028',
  '\ud800',
  '😀',
  'A',
  'a',
  '0',
  '-----',
  '-----BEGIN ',
  '-----END ',
  'eyJ',
);

type TextMutation =
  | { readonly kind: 'insert'; readonly at: number; readonly text: string }
  | { readonly kind: 'delete'; readonly at: number; readonly count: number }
  | { readonly kind: 'replace'; readonly at: number; readonly text: string }
  | { readonly kind: 'truncate'; readonly at: number }
  | { readonly kind: 'repeat'; readonly at: number; readonly count: number; readonly times: number }
  | { readonly kind: 'case'; readonly upper: boolean };

const fragment = fc.oneof(interestingText, fc.string({ maxLength: 8 }), fc.string({ unit: 'binary', maxLength: 4 }));
const textMutation: fc.Arbitrary<TextMutation> = fc.oneof(
  fc.record({ kind: fc.constant('insert' as const), at: position, text: fragment }),
  fc.record({ kind: fc.constant('delete' as const), at: position, count: fc.integer({ min: 1, max: 12 }) }),
  fc.record({ kind: fc.constant('replace' as const), at: position, text: fragment }),
  fc.record({ kind: fc.constant('truncate' as const), at: position }),
  fc.record({
    kind: fc.constant('repeat' as const),
    at: position,
    count: fc.integer({ min: 1, max: 16 }),
    times: fc.integer({ min: 2, max: 300 }),
  }),
  fc.record({ kind: fc.constant('case' as const), upper: fc.boolean() }),
);

function applyTextMutation(input: string, mutation: TextMutation): string {
  const at = mutation.kind === 'case' ? 0 : Math.floor(mutation.at * (input.length + 1));
  switch (mutation.kind) {
    case 'insert':
      return input.slice(0, at) + mutation.text + input.slice(at);
    case 'delete':
      return input.slice(0, at) + input.slice(at + mutation.count);
    case 'replace':
      return input.slice(0, at) + mutation.text + input.slice(at + mutation.text.length);
    case 'truncate':
      return input.slice(0, at);
    case 'repeat':
      return input.slice(0, at) + input.slice(at, at + mutation.count).repeat(mutation.times) + input.slice(at);
    case 'case':
      return mutation.upper ? input.toUpperCase() : input.toLowerCase();
  }
}

/** One of `samples` with 0 to `max` text mutations applied. */
export function mutatedText(samples: readonly string[], max = 3): fc.Arbitrary<string> {
  return fc
    .tuple(fc.constantFrom(...samples), fc.array(textMutation, { maxLength: max }))
    .map(([sample, mutations]) => mutations.reduce(applyTextMutation, sample));
}

/** Any string, including lone surrogates and control characters. */
export const anyString = fc.oneof(
  fc.string({ maxLength: 64 }),
  fc.string({ unit: 'binary', maxLength: 64 }),
  fc.string({ unit: fc.constantFrom(...'spiffe:/.-_%?#@[]ABCabc019'), maxLength: 64 }),
);

/** JSON text nested `depth` levels deep (`[[[…]]]` or `{"a":{"a":…}}`), with `leaf` in the middle. */
export function deeplyNested(depth: number, shape: 'array' | 'object', leaf = '1'): string {
  return shape === 'array'
    ? `${'['.repeat(depth)}${leaf}${']'.repeat(depth)}`
    : `${'{"a":'.repeat(depth)}${leaf}${'}'.repeat(depth)}`;
}

/** Values of every JSON type, nested a few levels, with the awkward ones (huge numbers, `__proto__`, empty keys). */
export const jsonValue: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom(null, true, false, 0, -1, 1.5, 1e308, -0, Number.MAX_SAFE_INTEGER + 2, '', '0', 'true', 'null'),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    anyString,
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.oneof(anyString, fc.constantFrom('__proto__', 'constructor', 'toString', '')), tie('value'), {
      maxKeys: 4,
    }),
  ),
})).value;

type JsonMutation =
  | { readonly kind: 'set'; readonly path: number; readonly value: unknown }
  | { readonly kind: 'delete'; readonly path: number }
  | { readonly kind: 'wrap'; readonly path: number; readonly depth: number; readonly shape: 'array' | 'object' };

const jsonMutation: fc.Arbitrary<JsonMutation> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('set' as const), path: position, value: jsonValue }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), path: position }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('wrap' as const),
      path: position,
      // Built as objects, so kept below what JSON.stringify (the harness's and the parsers' own) can recurse into;
      // deeper nesting comes as text (jsonText).
      depth: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 1000 })),
      shape: fc.constantFrom('array' as const, 'object' as const),
    }),
  },
);

/** Every (parent, key) slot of a JSON document, depth first, the document itself excluded. */
function slots(document: unknown): { parent: Record<string, unknown> | unknown[]; key: string | number }[] {
  const found: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) {
      node.forEach((child, i) => {
        found.push({ parent: node, key: i });
        visit(child);
      });
    } else if (typeof node === 'object' && node !== null) {
      for (const [key, child] of Object.entries(node)) {
        found.push({ parent: node as Record<string, unknown>, key });
        visit(child);
      }
    }
  };
  visit(document);
  return found;
}

function nest(value: unknown, depth: number, shape: 'array' | 'object'): unknown {
  let out = value;
  for (let i = 0; i < depth; i++) out = shape === 'array' ? [out] : { a: out };
  return out;
}

function applyJsonMutation(document: unknown, mutation: JsonMutation): unknown {
  const all = slots(document);
  if (all.length === 0) return mutation.kind === 'set' ? mutation.value : document;
  const slot = all[Math.floor(mutation.path * all.length)] as (typeof all)[number];
  const parent = slot.parent as Record<string | number, unknown>;
  if (mutation.kind === 'set') parent[slot.key] = mutation.value;
  else if (mutation.kind === 'wrap') parent[slot.key] = nest(parent[slot.key], mutation.depth, mutation.shape);
  else if (Array.isArray(slot.parent)) slot.parent.splice(slot.key as number, 1);
  else delete parent[slot.key];
  return document;
}

/**
 * One of `samples` (deep-copied) with 0 to `max` mutations: a field set to a value of any type, a field removed, a
 * field wrapped in up to 1,000 levels of arrays or objects. Extra top-level keys come from `set` on the document.
 */
export function mutatedJson(samples: readonly unknown[], max = 3): fc.Arbitrary<unknown> {
  return fc
    .tuple(fc.constantFrom(...samples), fc.array(jsonMutation, { maxLength: max }))
    .map(([sample, mutations]) => mutations.reduce(applyJsonMutation, structuredClone(sample)));
}

const DEEP_MARKER = '\u0000deep\u0000';

/** JSON text of `document`, or of a broken variant of it: cut, spliced, unbalanced, or with one field replaced by
 * up to 100,000 levels of nesting (as text, which JSON.parse accepts but a recursive walk may not survive). */
export function jsonText(documents: fc.Arbitrary<unknown>): fc.Arbitrary<string> {
  const deep = fc.tuple(
    fc.oneof(fc.integer({ min: 1, max: 2_000 }), fc.integer({ min: 1, max: 100_000 })),
    fc.constantFrom('array' as const, 'object' as const),
  );
  const spliced = fc.tuple(documents, position, deep).map(([document, at, [depth, shape]]) => {
    const all = slots(document);
    if (all.length === 0) return deeplyNested(depth, shape);
    // Swapped in and back rather than cloned: structuredClone recurses, and the documents may nest 1,000 deep.
    const slot = all[Math.floor(at * all.length)] as (typeof all)[number];
    const parent = slot.parent as Record<string | number, unknown>;
    const saved = parent[slot.key];
    parent[slot.key] = DEEP_MARKER;
    const text = JSON.stringify(document) ?? 'null';
    parent[slot.key] = saved;
    return text.replace(JSON.stringify(DEEP_MARKER), deeplyNested(depth, shape));
  });
  return fc.oneof(
    { weight: 6, arbitrary: documents.map((document) => JSON.stringify(document) ?? 'null') },
    {
      weight: 2,
      arbitrary: documents.chain((document) => mutatedText([JSON.stringify(document) ?? 'null'], 2)),
    },
    { weight: 2, arbitrary: spliced },
    { weight: 1, arbitrary: deep.map(([depth, shape]) => deeplyNested(depth, shape)) },
    { weight: 1, arbitrary: anyString },
  );
}
