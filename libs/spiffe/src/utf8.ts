/** A UTF-16 code unit is at most 3 bytes of UTF-8 (a surrogate pair, two units, is 4 bytes). */
const MAX_UTF8_BYTES_PER_UNIT = 3;

/**
 * Whether `text` takes more than `maxBytes` bytes as UTF-8 (a lone surrogate counts as U+FFFD's 3 bytes, as
 * `TextEncoder` writes it). Short text is answered from its length alone, without counting or encoding it.
 */
export function utf8LongerThan(text: string, maxBytes: number): boolean {
  if (text.length * MAX_UTF8_BYTES_PER_UNIT <= maxBytes) return false;
  return Buffer.byteLength(text, 'utf8') > maxBytes;
}
