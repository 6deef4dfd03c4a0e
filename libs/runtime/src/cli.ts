import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { DurationError, durationSecondsWithin } from './duration.js';
import { SIGIL_VERSION } from './version.js';
import { SelectorError, parseSelector, type Selector } from './selectors.js';

/**
 * The command-line conventions of `sigil-server` and `sigil-agent`, in one place: how a failure is printed and exits,
 * how a record is printed as text or JSON, and the parsers of the flags both take.
 */

// What the CLIs take from this lib besides the conventions below, so that a command loads `@sigil/runtime/cli` only and
// not the whole lib (its config rules load class-validator and @sigil/spiffe).
export { DurationError, parseDurationMs } from './duration.js';
export { singleAudienceProblem } from './jwt-audience.js';

/**
 * A subcommand known up front by its name and description, its module loaded only when the command line names it, so
 * that `--help` and the client commands do not load what `run` needs (the server framework, database drivers).
 */
export interface LazyCommand {
  readonly name: string;
  /** The subcommand's description, in the root help; the loaded command gets it from here. */
  readonly description: string;
  /** Builds the subcommand, importing its module dynamically. */
  readonly load: () => Promise<Command>;
}

/**
 * A CLI's root command (`--version` prints Sigil's) with `commands` in their order. The one the command line names
 * (`<cli> entry show …`, `<cli> help entry`) is loaded whole; each other one is a stand-in with its name and
 * description, which is all the root help, `help` and commander's "did you mean" need. Without `argv`, every command
 * is loaded (the whole tree).
 */
export async function lazyProgram(
  name: string,
  description: string,
  commands: readonly LazyCommand[],
  argv?: readonly string[],
): Promise<Command> {
  const program = new Command(name).description(description).version(SIGIL_VERSION);
  const named = argv === undefined ? undefined : subcommandName(argv.slice(2));
  for (const each of commands) {
    const command = argv === undefined || each.name === named ? await each.load() : new Command(each.name);
    program.addCommand(command.description(each.description));
  }
  return program;
}

/** The subcommand a command line names: its first operand, or the one after `help` (the roots take no option values). */
function subcommandName(args: readonly string[]): string | undefined {
  const operands = args.filter((arg) => !arg.startsWith('-'));
  return operands[0] === 'help' ? operands[1] : operands[0];
}

/** A failure the CLI reports as one line, `Error: <message>`, exiting with `exitCode` (1 unless said). */
export class CliError extends Error {
  override readonly name = 'CliError';

  /**
   * @param kind what went wrong in the admin API's words (`invalid_argument`, `not_found`, `unavailable`, …), shown in
   *   the JSON form of the error (`--output json`).
   */
  constructor(
    message: string,
    readonly exitCode = 1,
    readonly kind = 'unknown',
  ) {
    super(message);
  }
}

/** Commander's codes for help and version output: not failures, nothing more to print. */
const COMMANDER_OUTPUT_CODES = new Set(['commander.helpDisplayed', 'commander.help', 'commander.version']);

/**
 * Runs a command tree. A failure prints one line on stderr, `Error: <first line of the message>`, or with
 * `--output json` on the command line `{"error":"<kind>","message":"…"}`, and sets a non-zero exit code (the
 * CliError's own, else 1); an unexpected error also prints its stack when SIGIL_DEBUG=1. Commander's usage errors
 * (unknown option, bad flag value, missing argument) are reported the same way, kind `invalid_argument`.
 */
export async function runCli(program: Command, argv: readonly string[]): Promise<void> {
  reportUsageErrorsByThrowing(program);
  try {
    await program.parseAsync([...argv]);
  } catch (error) {
    if (error instanceof CommanderError && COMMANDER_OUTPUT_CODES.has(error.code)) {
      process.exitCode = error.exitCode;
      return;
    }
    const usage = error instanceof CommanderError;
    const message = (error instanceof Error ? error.message : String(error)).replace(/^error: /, '');
    const line = message.split('\n')[0]!;
    const kind = error instanceof CliError ? error.kind : usage ? 'invalid_argument' : 'unknown';
    process.stderr.write(wantsJson(argv) ? `${JSON.stringify({ error: kind, message: line })}\n` : `Error: ${line}\n`);
    if (!(error instanceof CliError) && !usage && process.env['SIGIL_DEBUG'] === '1' && error instanceof Error) {
      process.stderr.write(`${error.stack}\n`);
    }
    process.exitCode = error instanceof CliError ? error.exitCode : usage ? (error as CommanderError).exitCode || 1 : 1;
  }
}

/** Makes every command of the tree throw its usage errors instead of printing them and exiting. */
function reportUsageErrorsByThrowing(command: Command): void {
  command.exitOverride();
  // Help and version still go to stdout; commander's own error line is replaced by runCli's.
  command.configureOutput({ outputError: () => undefined });
  for (const sub of command.commands) reportUsageErrorsByThrowing(sub);
}

/** Whether the command line asks for JSON output (`--output json` or `--output=json`). */
function wantsJson(argv: readonly string[]): boolean {
  return argv.some((arg, index) => arg === '--output=json' || (arg === '--output' && argv[index + 1] === 'json'));
}

/**
 * Prints `data` as indented JSON (one line per record with `jsonLines`, for a stream of them) when `json`, else the
 * text `render` gives.
 */
export function printResult(json: boolean, data: unknown, render: () => string, jsonLines = false): void {
  const text = json ? (jsonLines ? JSON.stringify(data) : JSON.stringify(data, null, 2)) : render();
  process.stdout.write(`${text}\n`);
}

/** Aligned `Label : value` lines, as SPIRE's CLIs print records. */
export function recordTable(rows: readonly (readonly [string, string])[]): string {
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `${label.padEnd(width)} : ${value}`).join('\n');
}

/** Parses a whole-number flag; commander reports a bad value naming the flag. */
export function integerFlag(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string) => {
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
    }
    return Number(value);
  };
}

/** Longest duration a CLI flag takes by default: ten years (the server checks each field's own bounds). */
const MAX_DURATION_FLAG_SECONDS = 10 * 365 * 24 * 3600;

/** Parses a duration flag (`90s`, `15m`, `1h30m`, or bare seconds) into whole seconds within bounds. */
export function durationFlag(minSeconds: number, maxSeconds = MAX_DURATION_FLAG_SECONDS): (value: string) => number {
  return (value: string) => {
    try {
      return durationSecondsWithin(value, minSeconds, maxSeconds);
    } catch (error) {
      if (error instanceof DurationError) throw new InvalidArgumentError(error.message);
      throw error;
    }
  };
}

/** Collects a repeatable `type:value` selector flag, each checked by the selector rules. */
export function collectSelector(value: string, previous: Selector[] = []): Selector[] {
  try {
    return [...previous, parseSelector(value)];
  } catch (error) {
    if (error instanceof SelectorError) throw new InvalidArgumentError(error.message);
    throw error;
  }
}

/** Collects a repeatable flag's values. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
