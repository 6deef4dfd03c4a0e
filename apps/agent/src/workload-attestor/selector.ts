/**
 * A selector, as workload attestors report them and registration entries list them (SPIRE's `type:value`, e.g.
 * type `unix` and value `uid:1000`, written `unix:uid:1000` on the command line).
 */
export interface Selector {
  readonly type: string;
  readonly value: string;
}

/** `type:value`, the form operators write and entries store. */
export function formatSelector(selector: Selector): string {
  return `${selector.type}:${selector.value}`;
}

/**
 * Whether an entry with `required` selectors matches a workload attested with `present` selectors: every required
 * selector must be among the present ones (DESIGN.md §3). An entry without selectors matches nothing, so a missing
 * selector list can never grant an identity to every caller.
 */
export function matchesAllSelectors(required: readonly Selector[], present: readonly Selector[]): boolean {
  if (required.length === 0) return false;
  const have = new Set(present.map(formatSelector));
  return required.every((selector) => have.has(formatSelector(selector)));
}
