/**
 * Selectors: the one definition of what a selector is, how it is written, checked, ordered and matched, shared by
 * the server (registration entries, listing filters, the CLI) and the agent (synced entries, workload attestors,
 * the SVID cache). SPIRE's model: a selector is a type (the attestor that produces it, e.g. `unix`) and a value
 * (`uid:1000`), written `unix:uid:1000`; the type never holds a `:`, so the first `:` splits the written form.
 */
import { utf8LongerThan } from '@sigil/spiffe';
import { storedTextProblem } from './stored-text.js';

/** A selector, e.g. `{ type: 'unix', value: 'uid:1000' }` (written `unix:uid:1000`). */
export interface Selector {
  readonly type: string;
  readonly value: string;
}

/** Bounds of one selector and of an entry's selector list. */
export const SELECTOR_LIMITS = {
  /** Selectors on one registration entry. */
  maxPerEntry: 64,
  /** Characters of a type (ASCII only, see {@link SELECTOR_TYPE_PATTERN}). */
  maxTypeLength: 64,
  /** UTF-8 bytes of a value. */
  maxValueBytes: 1024,
} as const;

/** The characters a selector type may hold: letters, digits, `_`, `-` and `.` (so never the `:` separator). */
export const SELECTOR_TYPE_PATTERN = /^[A-Za-z0-9_.-]+$/;

/** How a selector filter matches an entry's selector set (SPIRE's match behaviours). */
export type SelectorMatch = 'superset' | 'exact' | 'subset' | 'any';
export const SELECTOR_MATCHES: readonly SelectorMatch[] = ['superset', 'exact', 'subset', 'any'];

/**
 * A selector that breaks the rules. `part` names what is wrong (`type`, `value`, or `selector` for the whole),
 * so a caller can prefix its own field path (`selectors.1.type: must not be empty`).
 */
export class SelectorError extends Error {
  override readonly name = 'SelectorError';

  constructor(
    readonly part: 'type' | 'value' | 'selector',
    readonly problem: string,
  ) {
    super(part === 'selector' ? problem : `${part}: ${problem}`);
  }
}

const quote = (text: string): string => JSON.stringify(text);

/**
 * Checks one selector against the rules: a non-empty type of letters, digits, `_`, `-`, `.` (at most 64), a
 * non-empty value of at most 1024 UTF-8 bytes, well-formed and without control characters ({@link storedTextProblem}).
 * Returns a fresh `{type, value}`.
 *
 * @throws SelectorError naming the part at fault
 */
export function checkSelector(selector: unknown): Selector {
  if (typeof selector !== 'object' || selector === null || Array.isArray(selector)) {
    throw new SelectorError('selector', 'must be an object');
  }
  const { type, value } = selector as { type?: unknown; value?: unknown };
  if (typeof type !== 'string') throw new SelectorError('type', 'must be a string');
  if (typeof value !== 'string') throw new SelectorError('value', 'must be a string');
  if (type.length === 0) throw new SelectorError('type', 'must not be empty');
  if (type.length > SELECTOR_LIMITS.maxTypeLength) {
    throw new SelectorError('type', `must be at most ${SELECTOR_LIMITS.maxTypeLength} characters`);
  }
  if (!SELECTOR_TYPE_PATTERN.test(type)) {
    throw new SelectorError('type', `${quote(type)} may only contain letters, digits, '_', '-' and '.'`);
  }
  if (value.length === 0) throw new SelectorError('value', 'must not be empty');
  if (utf8LongerThan(value, SELECTOR_LIMITS.maxValueBytes)) {
    throw new SelectorError('value', `must be at most ${SELECTOR_LIMITS.maxValueBytes} bytes`);
  }
  const problem = storedTextProblem(value);
  if (problem !== undefined) throw new SelectorError('value', problem);
  return { type, value };
}

/**
 * Parses the written form `type:value` (the CLI's `--selector`, the admin API's `selector` filter) and checks it
 * with {@link checkSelector}.
 *
 * @throws SelectorError when there is no `:` with text on both sides, or the parts break the rules
 */
export function parseSelector(text: string): Selector {
  const colon = text.indexOf(':');
  if (colon <= 0 || colon === text.length - 1) {
    throw new SelectorError('selector', `must look like type:value (e.g. unix:uid:1000), got ${quote(text)}`);
  }
  return checkSelector({ type: text.slice(0, colon), value: text.slice(colon + 1) });
}

/** `type:value`, the form operators write. */
export function formatSelector(selector: Selector): string {
  return `${selector.type}:${selector.value}`;
}

/** Orders selectors by type, then value (the order entries store and list them in). */
export function compareSelectors(a: Selector, b: Selector): number {
  if (a.type !== b.type) return a.type < b.type ? -1 : 1;
  if (a.value !== b.value) return a.value < b.value ? -1 : 1;
  return 0;
}

/**
 * A key equal for equal selectors and different for different ones, whatever characters they hold (the written
 * `type:value` form is ambiguous for a type with a `:`, which an attestor bug could produce).
 */
export function selectorKey(selector: Selector): string {
  return `${selector.type.length}:${selector.type}:${selector.value}`;
}

/** A key equal for equal sets of selectors, whatever their order or repetition ({@link selectorKey} each). */
export function selectorSetKey(selectors: readonly Selector[]): string {
  return JSON.stringify([...new Set(selectors.map(selectorKey))].sort());
}

/**
 * Whether an entry with `required` selectors matches a workload attested with `present` selectors: every required
 * selector must be among the present ones. An entry without selectors matches nothing, so a missing selector list
 * can never grant an identity to every caller. To match many entries against one workload, use {@link SelectorMatcher}.
 */
export function matchesAllSelectors(required: readonly Selector[], present: readonly Selector[]): boolean {
  return new SelectorMatcher(present).matchesAll(requiredSelectorKeys(required));
}

/** An entry's selectors as {@link SelectorMatcher.matchesAll} takes them: worked out once per entry, not per match. */
export function requiredSelectorKeys(required: readonly Selector[]): readonly string[] {
  return required.map(selectorKey);
}

/**
 * A workload's selectors, read once, matched against many entries with the rule of {@link matchesAllSelectors} (an
 * agent's cache matches every entry it holds on each change a caller's stream sees: one key and one set per entry
 * and call was most of what that allocated).
 */
export class SelectorMatcher {
  readonly #present: ReadonlySet<string>;

  constructor(present: readonly Selector[]) {
    this.#present = new Set(present.map(selectorKey));
  }

  /** Whether every one of an entry's selectors ({@link requiredSelectorKeys}) is present; never for none. */
  matchesAll(required: readonly string[]): boolean {
    if (required.length === 0) return false;
    for (const key of required) if (!this.#present.has(key)) return false;
    return true;
  }
}
