/**
 * Durations: the one parser every flag, CLI option, environment variable and config key uses. The syntax is Go's
 * `time.ParseDuration` (what SPIRE's configuration takes): one or more decimal numbers, each with an optional
 * fraction and a unit — `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h` — such as `90s`, `15m`, `1h30m` or `1.5h`. Sigil
 * also keeps two forms it accepted before: a bare number is seconds (`3600`, `0.5`), and `d` is 24 hours (`7d`).
 * Negative durations are refused: nothing in Sigil is configured with one.
 */

const NANOSECONDS_PER_UNIT: Readonly<Record<string, number>> = {
  ns: 1,
  us: 1e3,
  µs: 1e3, // U+00B5 MICRO SIGN, as Go accepts
  μs: 1e3, // U+03BC GREEK SMALL LETTER MU, as Go accepts
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
  d: 86400e9,
};

/** Longest text taken: far beyond any real duration, short enough that a hostile value costs nothing. */
const MAX_DURATION_TEXT = 64;
const BARE_SECONDS = /^\d{1,12}(?:\.\d{1,9})?$/;
const GO_DURATION = /^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h|d))+$/;
const GO_TERM = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)/g;

/** The hint every duration error ends with. */
export const DURATION_SYNTAX = 'such as 90s, 15m or 1h30m (a bare number is seconds)';

/** A value that is not a duration, or not one the caller accepts; the message says which and shows the value. */
export class DurationError extends Error {
  override readonly name = 'DurationError';
}

const shown = (value: unknown): string => {
  const text = typeof value === 'string' ? value : String(value);
  return JSON.stringify(text.length > MAX_DURATION_TEXT ? `${text.slice(0, MAX_DURATION_TEXT)}…` : text);
};

/**
 * The duration `text` denotes, in nanoseconds (a whole number; fractions below a nanosecond are dropped, as Go
 * does). A number (from a JSON config file) is seconds.
 *
 * @throws DurationError when it is not a non-negative duration
 */
export function parseDurationNanoseconds(value: string | number): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0)
      throw new DurationError(`must be a duration ${DURATION_SYNTAX}, got ${shown(value)}`);
    return checkedTotal(value * 1e9, value);
  }
  const text = value.trim();
  if (text.length > MAX_DURATION_TEXT)
    throw new DurationError(`must be a duration ${DURATION_SYNTAX}, got ${shown(value)}`);
  if (BARE_SECONDS.test(text)) return checkedTotal(Math.round(Number(text) * 1e9), value);
  if (!GO_DURATION.test(text)) throw new DurationError(`must be a duration ${DURATION_SYNTAX}, got ${shown(value)}`);
  let total = 0;
  for (const [, amount, unit] of text.matchAll(GO_TERM)) {
    total += Math.trunc(Number(amount) * NANOSECONDS_PER_UNIT[unit!]!);
  }
  return checkedTotal(total, value);
}

function checkedTotal(nanoseconds: number, value: unknown): number {
  // Go's limit: an int64 of nanoseconds, about 292 years. Beyond Number's exact integers (about 104 days of
  // nanoseconds) the sum is still exact enough for any bound a caller checks in seconds or milliseconds.
  if (!(nanoseconds <= 9.2e18)) throw new DurationError(`is too long, got ${shown(value)}`);
  return Math.trunc(nanoseconds);
}

/** The duration in milliseconds, rounded down. @throws DurationError as {@link parseDurationNanoseconds} */
export function parseDurationMs(value: string | number): number {
  return Math.floor(parseDurationNanoseconds(value) / 1e6);
}

/**
 * The duration as a whole number of seconds, for settings kept in seconds (TTLs): `90m` is 5400, `1.5s` is refused
 * rather than silently cut.
 *
 * @throws DurationError when it is not a duration, or not a whole number of seconds
 */
export function durationSeconds(value: string | number): number {
  const nanoseconds = parseDurationNanoseconds(value);
  if (nanoseconds % 1e9 !== 0) throw new DurationError(`must be a whole number of seconds, got ${shown(value)}`);
  return nanoseconds / 1e9;
}

/**
 * Checks a duration in seconds against bounds, with a message that names them in the operator's units.
 *
 * @throws DurationError when it is not a duration of whole seconds from `min` to `max`
 */
export function durationSecondsWithin(value: string | number, min: number, max: number): number {
  const seconds = durationSeconds(value);
  if (seconds < min || seconds > max) {
    throw new DurationError(`must be from ${formatDuration(min)} to ${formatDuration(max)}, got ${shown(value)}`);
  }
  return seconds;
}

/** Whole seconds written the way the parser reads them back: `90` → `1m30s`, `86400` → `24h`, `0` → `0s`. */
export function formatDuration(seconds: number): string {
  if (seconds === 0) return '0s';
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  return `${hours > 0 ? `${hours}h` : ''}${minutes > 0 ? `${minutes}m` : ''}${rest > 0 ? `${rest}s` : ''}`;
}
