import { describe, expect, it } from 'vitest';
import {
  SelectorError,
  checkSelector,
  compareSelectors,
  formatSelector,
  matchesAllSelectors,
  requiredSelectorKeys,
  SelectorMatcher,
  parseSelector,
  selectorKey,
} from './selectors.js';

describe('checkSelector', () => {
  it('accepts SPIRE-style selectors and returns a fresh copy', () => {
    const input = { type: 'k8s.io_v1-x', value: 'pod-label:app=web', extra: 1 };
    expect(checkSelector(input)).toEqual({ type: 'k8s.io_v1-x', value: 'pod-label:app=web' });
  });

  it.each([
    [null, 'selector', 'must be an object'],
    [['unix', 'uid:1'], 'selector', 'must be an object'],
    [{ type: 1, value: 'x' }, 'type', 'must be a string'],
    [{ type: 'unix', value: 1 }, 'value', 'must be a string'],
    [{ type: '', value: 'x' }, 'type', 'must not be empty'],
    [{ type: 'a'.repeat(65), value: 'x' }, 'type', 'must be at most 64 characters'],
    [{ type: 'un:ix', value: 'x' }, 'type', `"un:ix" may only contain letters, digits, '_', '-' and '.'`],
    [{ type: 'unix', value: '' }, 'value', 'must not be empty'],
    [{ type: 'unix', value: 'é'.repeat(513) }, 'value', 'must be at most 1024 bytes'],
    [{ type: 'unix', value: 'uid:1\n' }, 'value', 'must not contain control characters'],
    [{ type: 'unix', value: 'uid:\ud800' }, 'value', 'must be well-formed Unicode (it holds a lone UTF-16 surrogate)'],
    [{ type: 'unix', value: '\udc00x' }, 'value', 'must be well-formed Unicode (it holds a lone UTF-16 surrogate)'],
  ])('refuses %j: %s %s', (input, part, problem) => {
    let caught: unknown;
    try {
      checkSelector(input);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(SelectorError);
    expect((caught as SelectorError).part).toBe(part);
    expect((caught as SelectorError).problem).toBe(problem);
  });

  it('takes characters outside the BMP (a surrogate pair is one character)', () => {
    expect(checkSelector({ type: 'k8s', value: 'pod-label:app=\ud83d\ude00' }).value).toBe('pod-label:app=😀');
  });

  it('takes a value of exactly 1024 bytes', () => {
    expect(checkSelector({ type: 'unix', value: 'é'.repeat(512) }).value).toHaveLength(512);
  });
});

describe('parseSelector', () => {
  it('splits at the first colon', () => {
    expect(parseSelector('unix:path:/usr/bin/a:b')).toEqual({ type: 'unix', value: 'path:/usr/bin/a:b' });
  });

  it.each(['unix', ':uid:1', 'unix:', ''])('refuses %j', (text) => {
    expect(() => parseSelector(text)).toThrow(/must look like type:value/);
  });

  it('checks the parts', () => {
    expect(() => parseSelector('un ix:uid:1')).toThrow(/^type: "un ix" may only contain/);
  });
});

describe('ordering, keys and matching', () => {
  it('orders by type, then value', () => {
    const sorted = [
      { type: 'unix', value: 'uid:2' },
      { type: 'k8s', value: 'ns:a' },
      { type: 'unix', value: 'uid:1' },
    ].sort(compareSelectors);
    expect(sorted.map(formatSelector)).toEqual(['k8s:ns:a', 'unix:uid:1', 'unix:uid:2']);
  });

  it('keys selectors without the ambiguity of the written form', () => {
    expect(formatSelector({ type: 'a:b', value: 'c' })).toBe(formatSelector({ type: 'a', value: 'b:c' }));
    expect(selectorKey({ type: 'a:b', value: 'c' })).not.toBe(selectorKey({ type: 'a', value: 'b:c' }));
  });

  it('matches when every required selector is present', () => {
    const present = [
      { type: 'unix', value: 'uid:1000' },
      { type: 'unix', value: 'gid:1000' },
    ];
    expect(matchesAllSelectors([{ type: 'unix', value: 'uid:1000' }], present)).toBe(true);
    expect(matchesAllSelectors(present, present)).toBe(true);
    expect(matchesAllSelectors([...present, { type: 'unix', value: 'user:x' }], present)).toBe(false);
  });

  it('never matches an entry without selectors', () => {
    expect(matchesAllSelectors([], [{ type: 'unix', value: 'uid:0' }])).toBe(false);
  });

  it('does not confuse a type holding a colon with a longer value', () => {
    expect(matchesAllSelectors([{ type: 'unix', value: 'uid:0' }], [{ type: 'unix:uid', value: '0' }])).toBe(false);
  });

  it('SelectorMatcher answers as matchesAllSelectors for every entry it is asked about', () => {
    const present = [
      { type: 'unix', value: 'uid:1000' },
      { type: 'unix', value: 'gid:1000' },
      { type: 'unix:uid', value: '0' },
    ];
    const entries = [
      [],
      [{ type: 'unix', value: 'uid:1000' }],
      [{ type: 'unix', value: 'uid:0' }],
      [
        { type: 'unix', value: 'uid:1000' },
        { type: 'unix', value: 'gid:1000' },
      ],
      [
        { type: 'unix', value: 'uid:1000' },
        { type: 'unix', value: 'user:x' },
      ],
      [{ type: 'unix:uid', value: '0' }],
      [
        { type: 'unix', value: 'uid:1000' },
        { type: 'unix', value: 'uid:1000' },
      ],
    ];
    const matcher = new SelectorMatcher(present);
    const answers = entries.map((required) => matcher.matchesAll(requiredSelectorKeys(required)));
    expect(answers).toEqual([false, true, false, true, false, true, true]);
    // Both functions share the matcher: each answer is also checked against the rule written out on its own.
    const reference = (required: { type: string; value: string }[]) =>
      required.length > 0 && required.every((r) => present.some((p) => p.type === r.type && p.value === r.value));
    expect(answers).toEqual(entries.map(reference));
    expect(entries.map((required) => matchesAllSelectors(required, present))).toEqual(answers);
    expect(new SelectorMatcher([]).matchesAll(requiredSelectorKeys([{ type: 'unix', value: 'uid:0' }]))).toBe(false);
  });
});
