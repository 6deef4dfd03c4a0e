import { performance } from 'node:perf_hooks';
import fc from 'fast-check';

/**
 * The fuzzing harness: every target runs one fast-check property over a parser of untrusted input and reports how
 * many cases ran, how long they took, and every failure. A failure is a thrown error that is not one of the parser's
 * documented error types (a TypeError, a RangeError, a 500, …), a broken invariant, or a case slower than the
 * per-case bound (a hang).
 */

/** Runs per target in `npm test`; `npm run fuzz` sets `FUZZ_RUNS` (default there: 100,000). */
export const DEFAULT_SLICE_RUNS = 300;

/** A single case taking longer than this is a hang (the machine is shared, so the bound is generous). */
export const CASE_TIME_LIMIT_MS = Number(process.env.FUZZ_CASE_LIMIT_MS ?? 5_000);

/** Cases slower than this are reported (not failed), with the slowest one. */
export const SLOW_CASE_MS = 100;

/** The number of runs a target is asked for: `FUZZ_RUNS`, else the `npm test` slice. */
export function fuzzRuns(): number {
  const text = process.env.FUZZ_RUNS;
  if (text === undefined || text === '') return DEFAULT_SLICE_RUNS;
  const runs = Number(text);
  if (!Number.isSafeInteger(runs) || runs < 1) throw new Error(`FUZZ_RUNS: must be a positive integer, got ${text}`);
  return runs;
}

/** What one target run found. */
export interface FuzzReport {
  readonly target: string;
  /** Cases the property ran (fast-check's `numRuns`, shrinking excluded). */
  readonly cases: number;
  readonly ms: number;
  /** Counterexample and error of the failure, if any (fast-check stops at the first, after shrinking it). */
  readonly failure: string | undefined;
  /** Cases slower than {@link SLOW_CASE_MS}. */
  readonly slowCases: number;
  readonly slowestCaseMs: number;
  /** The input of the slowest case, shortened. */
  readonly slowestCase: string;
  /** What the cases reached (outcomes by kind), so a run shows it went past the first check. */
  readonly outcomes: string;
}

/** Counts outcomes by name, for {@link FuzzReport.outcomes}. */
export class Outcomes {
  readonly #counts = new Map<string, number>();

  add(name: string): void {
    this.#counts.set(name, (this.#counts.get(name) ?? 0) + 1);
  }

  toString(): string {
    return [...this.#counts]
      .sort(([, a], [, b]) => b - a)
      .map(([name, count]) => `${name} ${count}`)
      .join(', ');
  }
}

/** Thrown by a property when the parser broke its contract; carries the original error as `cause`. */
export class ContractViolation extends Error {
  override readonly name = 'ContractViolation';
}

/**
 * Checks that `error` is one of the documented error types, else throws a {@link ContractViolation} naming what
 * was thrown instead.
 */
export function expectDocumented(error: unknown, documented: (error: unknown) => boolean, what: string): void {
  if (documented(error)) return;
  const kind = error instanceof Error ? `${error.name}: ${error.message}` : `non-error ${String(error)}`;
  throw new ContractViolation(`${what} threw an undocumented error: ${kind.slice(0, 500)}`, { cause: error });
}

/**
 * Calls `parse` and returns its result, or `undefined` when it threw a documented error; anything else is a
 * {@link ContractViolation}.
 */
export async function tryParse<T>(
  what: string,
  documented: (error: unknown) => boolean,
  parse: () => T | Promise<T>,
): Promise<T | undefined> {
  try {
    return await parse();
  } catch (error) {
    expectDocumented(error, documented, what);
    return undefined;
  }
}

/** Shortens a counterexample for a report line. */
export function preview(value: unknown, max = 200): string {
  let text: string;
  try {
    text = fc.stringify(value);
  } catch {
    // fc.stringify recurses: a value nested deeper than the stack allows is shown by its type.
    text = `(${Array.isArray(value) ? 'an array' : typeof value} nested too deeply to show)`;
  }
  return text.length > max ? `${text.slice(0, max)}… (${text.length} chars)` : text;
}

/**
 * Runs `predicate` over `runs` values of `arbitrary`, timing each case. A case over `caseTimeLimitMs` (default
 * {@link CASE_TIME_LIMIT_MS}) fails the run; fast-check's timeout plugin rejects it even when it never settles.
 */
export async function runTarget<T>(
  target: string,
  arbitrary: fc.Arbitrary<T>,
  predicate: (value: T) => Promise<void> | void,
  runs: number,
  outcomes?: Outcomes,
  caseTimeLimitMs = CASE_TIME_LIMIT_MS,
): Promise<FuzzReport> {
  let slowCases = 0;
  let slowestCaseMs = 0;
  let slowestCase = '';
  let cases = 0;
  const property = fc.asyncProperty(arbitrary, async (value) => {
    const start = performance.now();
    await predicate(value);
    const ms = performance.now() - start;
    if (ms > SLOW_CASE_MS) slowCases++;
    if (ms > slowestCaseMs) {
      slowestCaseMs = ms;
      slowestCase = preview(value);
    }
    if (ms > caseTimeLimitMs) {
      throw new ContractViolation(`case took ${Math.round(ms)} ms, over the ${caseTimeLimitMs} ms bound`);
    }
  });
  const start = performance.now();
  const details = await fc.check(property, {
    numRuns: runs,
    // Replays a reported run: FUZZ_SEED (and FUZZ_PATH for the counterexample alone) from its failure line.
    ...(process.env.FUZZ_SEED ? { seed: Number(process.env.FUZZ_SEED) } : {}),
    ...(process.env.FUZZ_PATH ? { path: process.env.FUZZ_PATH } : {}),
    plugins: [fc.timeout(caseTimeLimitMs * 2)],
  });
  const ms = performance.now() - start;
  cases = details.numRuns;
  let failure: string | undefined;
  if (details.failed) {
    const error = details.errorInstance;
    const cause = error instanceof Error && error.cause instanceof Error ? `\n  cause: ${error.cause.stack}` : '';
    failure =
      `seed ${details.seed}, path ${details.counterexamplePath}: counterexample ${preview(details.counterexample, 2000)}` +
      `\n  ${error instanceof Error ? error.message : String(error)}${cause}`;
  }
  return { target, cases, ms, failure, slowCases, slowestCaseMs, slowestCase, outcomes: String(outcomes ?? '') };
}

/** One line of the summary `npm run fuzz` prints per target. */
export function formatReport(report: FuzzReport): string {
  const rate = report.ms > 0 ? Math.round((report.cases / report.ms) * 1000) : 0;
  return (
    `${report.target.padEnd(28)} ${String(report.cases).padStart(8)} cases ${(report.ms / 1000).toFixed(1).padStart(7)} s` +
    ` (${rate}/s)  failures ${report.failure === undefined ? 0 : 1}  slow>${SLOW_CASE_MS}ms ${report.slowCases}` +
    `  slowest ${Math.round(report.slowestCaseMs)} ms` +
    (report.outcomes === '' ? '' : `\n    outcomes: ${report.outcomes}`)
  );
}
