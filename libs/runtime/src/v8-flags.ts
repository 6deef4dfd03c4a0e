import { setFlagsFromString } from 'node:v8';

/** A V8 flag that a Sigil process sets on itself, unless the operator chose that setting when starting node. */
export interface DefaultV8Flag {
  /** The flag as V8 takes it, e.g. `--heap-growing-percent=50`. */
  readonly flag: string;
  /**
   * Matches one node option by which the operator sets the same thing (each spelling V8 takes: `-` or `_`, `no-`,
   * `no_` or `no`): found among the options before the script or in `NODE_OPTIONS` (one option at a time, as node
   * splits it), the operator's choice is kept. Node refuses most V8 flags in `NODE_OPTIONS`, so in practice they come
   * before the script.
   */
  readonly chosenBy: RegExp;
}

/** Whether `option` is one by which the operator chose `flag`'s setting (`search`: no `lastIndex` carried over). */
export function choosesV8Flag({ chosenBy }: DefaultV8Flag, option: string): boolean {
  return option.search(chosenBy) !== -1;
}

/** The flags of `defaults` whose setting the operator did not choose (options before the script, `NODE_OPTIONS`). */
export function defaultV8Flags(
  defaults: readonly DefaultV8Flag[],
  execArgv: readonly string[] = process.execArgv,
  nodeOptions: string | undefined = process.env['NODE_OPTIONS'],
): string[] {
  const options = [...execArgv, ...(nodeOptions ?? '').split(/\s+/).filter(Boolean)];
  return defaults.filter((flag) => !options.some((option) => choosesV8Flag(flag, option))).map(({ flag }) => flag);
}

/**
 * Sets {@link defaultV8Flags} on this process (`v8.setFlagsFromString`) and returns them. A flag only changes what V8
 * does from then on: call this before the work it is for (module loading, a WebAssembly module's compilation). Any
 * change of V8's flags also makes the `node:` built-in modules loaded afterwards compile from source rather than from
 * Node's code cache, whose flag hash no longer matches (~20 ms more for node:http2 on Node 24).
 */
export function applyDefaultV8Flags(defaults: readonly DefaultV8Flag[]): string[] {
  const flags = defaultV8Flags(defaults);
  for (const flag of flags) setFlagsFromString(flag);
  return flags;
}
