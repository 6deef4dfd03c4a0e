import { durationSeconds } from './duration.js';

/**
 * Shows a configuration value an operator wrote, for a message that names the bad key: a string as is, anything
 * else as JSON. A value nested too deeply for JSON.stringify (which recurses, while JSON.parse does not) is shown
 * by its type, so a bad config file always gets a config error rather than a stack overflow.
 */
export function showConfigValue(value: unknown): string {
  if (typeof value === 'string') return value;
  try {
    return String(JSON.stringify(value));
  } catch {
    return `${Array.isArray(value) ? 'an array' : 'an object'} nested too deeply to show`;
  }
}

/**
 * The problem to report for a config file key set to `null`. class-validator's `IsOptional` lets null through
 * unchecked while the loaders treat only `undefined` as absent, so both apps refuse null while reading the file.
 */
export function nullConfigValueProblem(key: string, path: string): string {
  return `${key}: must not be null in config file ${path} (leave the key out for the default)`;
}

/**
 * A duration an operator wrote in a config key, in whole seconds, in the one duration syntax (`90s`, `10m`, `1h30m`,
 * `7d`, or a number of seconds); undefined when it is not one.
 */
export function parseDurationSeconds(value: unknown): number | undefined {
  if (typeof value !== 'number' && typeof value !== 'string') return undefined;
  try {
    return durationSeconds(value);
  } catch {
    return undefined;
  }
}

/**
 * A whole number an operator wrote in a config key (a JSON number, or the digits of a flag or an environment
 * variable); undefined when it is not one.
 */
export function parseCount(value: unknown): number | undefined {
  const count = typeof value === 'string' && /^\d{1,15}$/.test(value.trim()) ? Number(value.trim()) : value;
  return typeof count === 'number' && Number.isSafeInteger(count) ? count : undefined;
}

/**
 * A non-negative decimal number an operator wrote in a config key (a JSON number, or `0.2`/`5` in a flag or an
 * environment variable); undefined when it is not one. For rates below one per second.
 */
export function parseDecimal(value: unknown): number | undefined {
  const number =
    typeof value === 'string' && /^\d{1,15}(\.\d{1,15})?$/.test(value.trim()) ? Number(value.trim()) : value;
  return typeof number === 'number' && Number.isFinite(number) && number >= 0 ? number : undefined;
}
