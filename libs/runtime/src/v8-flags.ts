import { setFlagsFromString } from 'node:v8';

/** A V8 flag that a Sigil process sets on itself, unless the operator chose that setting when starting node. */
export interface DefaultV8Flag {
  /** The flag as V8 takes it, e.g. `--heap-growing-percent=50`. */
  readonly flag: string;
  /**
   * Matches any node option by which the operator sets the same thing (in `-` or `_` spelling, with or without `no-`):
   * found among the options before the script or in `NODE_OPTIONS`, the operator's choice is kept.
   */
  readonly chosenBy: RegExp;
}

/** The flags of `defaults` whose setting the operator did not choose (options before the script, `NODE_OPTIONS`). */
export function defaultV8Flags(
  defaults: readonly DefaultV8Flag[],
  execArgv: readonly string[] = process.execArgv,
  nodeOptions: string | undefined = process.env['NODE_OPTIONS'],
): string[] {
  const options = [...execArgv, nodeOptions ?? ''];
  return defaults.filter(({ chosenBy }) => !options.some((option) => chosenBy.test(option))).map(({ flag }) => flag);
}

/**
 * Sets {@link defaultV8Flags} on this process (`v8.setFlagsFromString`) and returns them. A flag only changes what V8
 * does from then on: call this before the work it is for (module loading, a WebAssembly module's compilation).
 */
export function applyDefaultV8Flags(defaults: readonly DefaultV8Flag[]): string[] {
  const flags = defaultV8Flags(defaults);
  for (const flag of flags) setFlagsFromString(flag);
  return flags;
}
