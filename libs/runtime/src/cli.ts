import { type Command, InvalidArgumentError } from 'commander';
import { DurationError, durationSecondsWithin } from './duration.js';
import { SelectorError, parseSelector, type Selector } from './selectors.js';

/**
 * The command-line conventions of `sigil-server` and `sigil-agent`, in one place: how a failure is printed and exits,
 * how a record is printed as text or JSON, and the parsers of the flags both take.
 */

/** A failure the CLI reports as one line, `Error: <message>`, exiting with `exitCode` (1 unless said). */
export class CliError extends Error {
  override readonly name = 'CliError';

  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/**
 * Runs a command tree. A failure prints one line, `Error: <first line of the message>`, and sets a non-zero exit
 * code (the CliError's own, else 1); an unexpected error also prints its stack when SIGIL_DEBUG=1. Usage errors are
 * commander's own (`error: unknown option …`), printed before it exits.
 */
export async function runCli(program: Command, argv: readonly string[]): Promise<void> {
  try {
    await program.parseAsync([...argv]);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`Error: ${message.split('\n')[0]}\n`);
    if (!(error instanceof CliError) && process.env['SIGIL_DEBUG'] === '1' && error instanceof Error) {
      process.stderr.write(`${error.stack}\n`);
    }
    process.exitCode = error instanceof CliError ? error.exitCode : 1;
  }
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
