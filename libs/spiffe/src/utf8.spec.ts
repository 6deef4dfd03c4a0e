import { describe, expect, it } from 'vitest';
import { utf8LongerThan } from './index.js';

describe('utf8LongerThan', () => {
  it.each([
    ['', 0, false],
    ['a', 0, true],
    ['abc', 3, false],
    ['abcd', 3, true],
    // 2-, 3- and 4-byte characters: the byte count, not the character count, decides.
    ['\u00e9\u00e9', 4, false],
    ['\u00e9\u00e9', 3, true],
    ['\u20ac', 3, false],
    ['\u20ac\u20ac', 5, true],
    ['\u{1F600}', 4, false],
    ['\u{1F600}', 3, true],
    // A lone surrogate has no UTF-8 form: written as U+FFFD, 3 bytes, as TextEncoder does.
    ['\ud800', 3, false],
    ['\ud800', 2, true],
  ])('%j over %d bytes: %s', (text, maxBytes, expected) => {
    expect(utf8LongerThan(text, maxBytes)).toBe(expected);
    expect(new TextEncoder().encode(text).length > maxBytes).toBe(expected);
  });

  it('agrees with TextEncoder on long mixed text at every limit around its size', () => {
    const text = `${'a'.repeat(700)}${'\u00e9'.repeat(300)}${'\u20ac'.repeat(100)}\u{1F600}`;
    const bytes = new TextEncoder().encode(text).length;
    for (let max = bytes - 5; max <= bytes + 5; max++) expect(utf8LongerThan(text, max)).toBe(bytes > max);
  });
});
