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
  const options: Record<string, string> = {};
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
