import { readFileSync } from 'node:fs';
import { TrustDomain } from '@sigil/spiffe';
import { ValidateBy, type ValidationArguments } from 'class-validator';
import { DURATION_SYNTAX, formatDuration } from './duration.js';
import {
  nullConfigValueProblem,
  parseCount,
  parseDecimal,
  parseDurationSeconds,
  showConfigValue,
} from './config-value.js';

/**
 * Configuration layering, the same for both apps: a flag beats its environment variable, which beats the JSON config
 * file's key, which beats the default. Every problem names the key as the operator wrote it (`--port`, `SIGIL_PORT`
 * or the file's `port`), so the loaders collect problems instead of stopping at the first.
 */

/** Where one config key can be set: its flag (commander's camelCase name), its variable, and whether the file may. */
export interface ConfigSource<Flag extends string = string> {
  readonly flag: Flag | null;
  readonly env: string | null;
  /** False for a key the file must not hold (a secret taken only from the environment); default true. */
  readonly file?: boolean;
}

/** `--kebab-case` of commander's camelCase flag name. */
export function flagName(flag: string): string {
  return `--${flag.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;
}

const fileMayHold = (sources: Readonly<Record<string, ConfigSource>>, key: string): boolean =>
  Object.hasOwn(sources, key) && sources[key]!.file !== false;

/**
 * Reads a JSON config file holding one object. An unreadable file, bad JSON, a non-object, an unknown key or a key
 * set to null each add a problem; the values are returned unchecked (the loader validates them with the others).
 */
export function readJsonConfigFile(
  path: string,
  sources: Readonly<Record<string, ConfigSource>>,
  problems: string[],
): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    problems.push(`--config: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    return {};
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    problems.push(`--config: ${path} is not valid JSON: ${(error as Error).message}`);
    return {};
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    problems.push(`--config: ${path} must hold a JSON object`);
    return {};
  }
  for (const [key, value] of Object.entries(parsed)) {
    if (!fileMayHold(sources, key)) problems.push(`${key}: unknown key in config file ${path}`);
    else if (value === null) problems.push(nullConfigValueProblem(key, path));
  }
  return parsed as Record<string, unknown>;
}

/** The raw value of each key that is set, and the name each key goes by in a message. */
export interface ConfigLayers<Key extends string> {
  readonly values: Partial<Record<Key, unknown>>;
  /** The flag, variable or file key the value came from; for a key that is not set, its flag (else variable, key). */
  readonly label: ReadonlyMap<Key, string>;
}

/**
 * Picks each key's value by precedence: flag, then environment variable (an empty one counts as unset), then file.
 * A repeatable flag given no times (an empty array) counts as unset.
 */
export function layerConfig<Key extends string, Flag extends string>(
  sources: Readonly<Record<Key, ConfigSource<Flag>>>,
  flags: Readonly<Partial<Record<Flag, unknown>>>,
  env: Readonly<Record<string, string | undefined>>,
  fileValues: Readonly<Record<string, unknown>>,
): ConfigLayers<Key> {
  const values: Partial<Record<Key, unknown>> = {};
  const label = new Map<Key, string>();
  for (const key of Object.keys(sources) as Key[]) {
    const source = sources[key];
    const flagValue = source.flag === null ? undefined : flags[source.flag];
    const envValue = source.env === null ? undefined : env[source.env];
    const fromFlag = Array.isArray(flagValue) ? flagValue.length > 0 : flagValue !== undefined;
    if (fromFlag) {
      values[key] = flagValue;
      label.set(key, flagName(source.flag as string));
    } else if (envValue !== undefined && envValue !== '') {
      values[key] = envValue;
      label.set(key, source.env as string);
    } else if (source.file !== false && Object.hasOwn(fileValues, key) && fileValues[key] !== undefined) {
      values[key] = fileValues[key];
      label.set(key, key);
    } else {
      label.set(key, source.flag !== null ? flagName(source.flag) : (source.env ?? key));
    }
  }
  return { values, label };
}

// Validation rules shared by both apps' raw config classes (class-validator decorators). Each message states the
// rule and shows the value the operator wrote.

const got = (value: unknown): string => `got '${showConfigValue(value)}'`;

/** A config rule: `message` states it; the value the operator wrote is appended. */
export function ConfigRule(name: string, validate: (value: unknown) => boolean, message: string): PropertyDecorator {
  return ValidateBy({
    name,
    validator: {
      validate,
      defaultMessage: (args?: ValidationArguments) => `${message}, ${got(args?.value)}`,
    },
  });
}

/** A whole number from `min` to `max` (a JSON number in the file, digits in a flag or variable). */
export function IsCountFrom(min: number, max: number): PropertyDecorator {
  return ConfigRule(
    'isCount',
    (value) => {
      const count = parseCount(value);
      return count !== undefined && count >= min && count <= max;
    },
    `must be a whole number from ${min} to ${max}`,
  );
}

/** A number from `min` to `max`, fractions allowed (a JSON number in the file, `0.2` in a flag or variable). */
export function IsNumberFrom(min: number, max: number): PropertyDecorator {
  return ConfigRule(
    'isNumber',
    (value) => {
      const number = parseDecimal(value);
      return number !== undefined && number >= min && number <= max;
    },
    `must be a number from ${min} to ${max}`,
  );
}

/** A duration of whole seconds from `min` to `max`, in the one duration syntax (`90s`, `1h30m`, bare seconds). */
export function IsDurationSeconds(min: number, max: number): PropertyDecorator {
  return ConfigRule(
    'isDurationSeconds',
    (value) => {
      const seconds = parseDurationSeconds(value);
      return seconds !== undefined && seconds >= min && seconds <= max;
    },
    `must be a duration from ${formatDuration(min)} to ${formatDuration(max)}, ${DURATION_SYNTAX}`,
  );
}

/** A switch as a flag (`true`), an environment variable (`true`/`false`, `1`/`0`) or a JSON boolean; else undefined. */
export function toConfigBoolean(value: unknown): boolean | undefined {
  if (typeof value === 'boolean') return value;
  if (value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  return undefined;
}

/** A switch: what {@link toConfigBoolean} reads. */
export function IsBooleanLike(): PropertyDecorator {
  return ConfigRule('isBooleanLike', (value) => toConfigBoolean(value) !== undefined, 'must be true or false');
}

/** A string with something in it and no NUL (a path, a name); `message` says what it must be. */
export const isNonEmptyString = (value: unknown): boolean =>
  typeof value === 'string' && value.trim().length > 0 && !value.includes('\0');

export function IsNonEmptyString(message = 'must be a non-empty string'): PropertyDecorator {
  return ConfigRule('isNonEmptyString', isNonEmptyString, message);
}

/** One of a fixed list of words. */
export function IsOneOf(values: readonly string[]): PropertyDecorator {
  return ConfigRule(
    'isOneOf',
    (value) => typeof value === 'string' && values.includes(value),
    `must be one of ${values.join(', ')}`,
  );
}

/** A trust domain name as SPIFFE writes it (lower case, no scheme, no path): what `TrustDomain.parse` gives back. */
export function IsTrustDomainName(): PropertyDecorator {
  return ConfigRule(
    'isTrustDomainName',
    (value) => {
      if (typeof value !== 'string') return false;
      try {
        return TrustDomain.parse(value).name === value;
      } catch {
        return false;
      }
    },
    'must be a trust domain name',
  );
}
