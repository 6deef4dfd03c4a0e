// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/;

/** A UTF-16 surrogate that is not half of a pair (in a `u` pattern a pair is one code point, outside `Cs`). */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * The rule for free text a record stores (a selector's value, an entry's hint): no control characters, and
 * well-formed Unicode. A lone surrogate (which JSON's `\ud800` escape yields) has no UTF-8 form: the database drivers
 * write U+FFFD in its place, so the stored text would differ from the text checked, and two entries compared as read
 * back would no longer equal what was sent. Returns what is wrong, or undefined.
 */
export function storedTextProblem(text: string): string | undefined {
  if (CONTROL_CHARACTERS.test(text)) return 'must not contain control characters';
  if (LONE_SURROGATE.test(text)) return 'must be well-formed Unicode (it holds a lone UTF-16 surrogate)';
  return undefined;
}
