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
