/** Command-line options of the process benchmarks: `--json` plus a few named numbers and strings per script. */

/** A numeric option: its default and the closed range it must fall in. */
export interface NumberOption {
  readonly default: number;
  readonly min: number;
  readonly max: number;
  readonly integer: boolean;
  readonly description: string;
}

export interface OptionsSpec<N extends string, S extends string> {
  /** Script name, for the usage line. */
  readonly script: string;
  readonly numbers: Readonly<Record<N, NumberOption>>;
  /** String options (e.g. a directory); absent unless given. */
  readonly strings?: Readonly<Record<S, string>>;
}

export interface ParsedOptions<N extends string, S extends string> {
  readonly json: boolean;
  readonly numbers: Readonly<Record<N, number>>;
  readonly strings: Readonly<Partial<Record<S, string>>>;
}

const flagName = (name: string): string => `--${name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;

/** The usage text: one line per option with its default. */
export function usage<N extends string, S extends string>(spec: OptionsSpec<N, S>): string {
  const lines = [
    `usage: node dist/bench/${spec.script} [options]`,
    '  --json  also print one JSON object on the last line',
  ];
  for (const [name, option] of Object.entries<NumberOption>(spec.numbers)) {
    lines.push(`  ${flagName(name)} N  ${option.description} (default ${option.default})`);
  }
  for (const [name, description] of Object.entries<string>(spec.strings ?? {})) {
    lines.push(`  ${flagName(name)} VALUE  ${description}`);
  }
  return lines.join('\n');
}

/**
 * Parses `argv` (without node and the script) against `spec`.
 *
 * @throws Error naming the option and the rule it breaks, or the unknown option with the usage text.
 */
export function parseOptions<N extends string, S extends string>(
  argv: readonly string[],
  spec: OptionsSpec<N, S>,
): ParsedOptions<N, S> {
  const numbers = Object.fromEntries(
    Object.entries<NumberOption>(spec.numbers).map(([name, option]) => [name, option.default]),
  ) as Record<N, number>;
  const strings: Partial<Record<S, string>> = {};
  const numberByFlag = new Map(Object.keys(spec.numbers).map((name) => [flagName(name), name as N]));
  const stringByFlag = new Map(Object.keys(spec.strings ?? {}).map((name) => [flagName(name), name as S]));
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--json') {
      json = true;
      continue;
    }
    const numberName = numberByFlag.get(arg);
    const stringName = stringByFlag.get(arg);
    if (numberName === undefined && stringName === undefined) {
      throw new Error(`unknown option ${arg}\n${usage(spec)}`);
    }
    const value = argv[++i];
    if (value === undefined) throw new Error(`${arg}: a value is required`);
    if (stringName !== undefined) {
      if (value.length === 0) throw new Error(`${arg}: must not be empty`);
      strings[stringName] = value;
      continue;
    }
    const option = spec.numbers[numberName!];
    const parsed = Number(value);
    const kind = option.integer ? 'an integer' : 'a number';
    if (
      value.trim() === '' ||
      !Number.isFinite(parsed) ||
      (option.integer && !Number.isInteger(parsed)) ||
      parsed < option.min ||
      parsed > option.max
    ) {
      throw new Error(`${arg}: must be ${kind} from ${option.min} to ${option.max}, got '${value}'`);
    }
    numbers[numberName!] = parsed;
  }
  return { json, numbers, strings };
}
