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
