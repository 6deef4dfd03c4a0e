import { type Command, CommanderError, InvalidArgumentError } from 'commander';
import { DurationError, durationSecondsWithin } from './duration.js';
import { SelectorError, parseSelector, type Selector } from './selectors.js';

/**
 * The command-line conventions of `sigil-server` and `sigil-agent`, in one place: how a failure is printed and exits,
 * how a record is printed as text or JSON, and the parsers of the flags both take.
 */

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
