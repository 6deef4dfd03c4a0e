import { DurationError, formatDuration, parseDurationMs } from './duration.js';

/**
 * The text form of a plug-in and its options, as both apps' `--node-attestor` take it:
 * `<type>[:<option>=<value>,…]`, e.g. `x509pop:ca_bundle=/etc/sigil/nodes.pem`. The type is SPIRE's plug-in name;
 * a value may hold anything but a comma.
 */

/** A plug-in type or option name: SPIRE's names are lower case words joined by `_`. */
export const PLUGIN_NAME = /^[a-z0-9_]+$/;

export interface PluginSpec {
  readonly type: string;
  readonly options: Record<string, string>;
}

/** Parses a plug-in spec; returns the problem (without the key's name) when it is not one. */
export function parsePluginSpec(text: string): PluginSpec | string {
  const colon = text.indexOf(':');
  const type = colon < 0 ? text : text.slice(0, colon);
  if (!PLUGIN_NAME.test(type))
    return `must be <type>[:<option>=<value>,…] with a type of a-z, 0-9 and _, got ${JSON.stringify(text)}`;
  // No prototype: an option named __proto__ is an option like any other (refused as unknown), not a lost setter call.
  const options: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const pair of colon < 0 ? [] : text.slice(colon + 1).split(',')) {
    const equals = pair.indexOf('=');
    const name = equals < 0 ? pair : pair.slice(0, equals);
    if (equals < 0 || !PLUGIN_NAME.test(name) || equals === pair.length - 1) {
      return `${type}: options must be <option>=<value> separated by commas, got ${JSON.stringify(pair)}`;
    }
    if (Object.hasOwn(options, name)) return `${type}: option ${name} is set twice`;
    options[name] = pair.slice(equals + 1);
  }
  return { type, options };
}

// Option values. A plug-in spec separates options with commas, so a list inside one value is `;`-separated
// (`env_allow_list=HOME;LANG`, `service_account_allow_list=ns:sa;ns2:sa2`). These parse what the plug-ins' options
// hold; each returns the problem (without the option's name) when the value is not one.

/**
 * The items of a `;`-separated option value, each trimmed; empty items (`a;;b`, a trailing `;`) are dropped, so
 * an option set to `""` or `;` is an empty list.
 */
export function parseOptionList(value: string): string[] {
  return value
    .split(';')
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
}

/** `true` or `false` (as SPIRE's HCL booleans are written); the problem otherwise. */
export function parseOptionBoolean(value: string): boolean | string {
  if (value === 'true') return true;
  if (value === 'false') return false;
  return `must be true or false, got ${JSON.stringify(value)}`;
}

/**
 * A duration option in milliseconds, in the one duration syntax (`500ms`, `5s`, `1m30s`; a bare number is
 * seconds), from `minMs` to `maxMs`; the problem otherwise.
 */
export function parseOptionDurationMs(value: string, minMs: number, maxMs: number): number | string {
  let ms: number;
  try {
    ms = parseDurationMs(value);
  } catch (error) {
    if (error instanceof DurationError) return error.message;
    throw error;
  }
  if (ms < minMs || ms > maxMs) {
    return `must be from ${showMs(minMs)} to ${showMs(maxMs)}, got ${JSON.stringify(value)}`;
  }
  return ms;
}

const showMs = (ms: number): string => (ms % 1000 === 0 ? formatDuration(ms / 1000) : `${ms}ms`);
