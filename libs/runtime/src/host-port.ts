import { isIP } from 'node:net';

/** A `HOST:PORT` address, with IPv6 addresses written `[::1]:8081`. */
export interface HostPort {
  /** Host name or IP address (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
  /** `host:port`, with brackets around an IPv6 address. */
  readonly text: string;
}

const HOST_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * Parses `HOST:PORT` (the agent's server addresses, the metrics and health listeners); returns the broken rule as a
 * message when it is not one. `minPort` 0 admits port 0 (a listener on a free port, as tests use).
 */
export function parseHostPort(value: string, minPort: 0 | 1 = 1): HostPort | string {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  if (match === null) return `must be HOST:PORT (IPv6 as [ADDRESS]:PORT), got '${value}'`;
  const port = Number(match[3]);
  if (port < minPort || port > 65535) return `port must be from ${minPort} to 65535, got '${value}'`;
  const bracketed = match[1];
  if (bracketed !== undefined) {
    if (isIP(bracketed) !== 6) return `${bracketed} in brackets must be an IPv6 address, got '${value}'`;
    return { host: bracketed, port, text: `[${bracketed}]:${port}` };
  }
  const host = match[2] as string;
  if (isIP(host) === 0 && !HOST_NAME.test(host)) return `host must be a host name or IP address, got '${value}'`;
  return { host, port, text: `${host}:${port}` };
}

/** The rule of a listener address in config (`--metrics-address`, `--health-address`), port 0 allowed. */
export const LISTEN_ADDRESS_RULE = 'must be HOST:PORT, e.g. 127.0.0.1:9988 (IPv6 as [::1]:9988)';

/** Whether `value` is a listener address ({@link LISTEN_ADDRESS_RULE}). */
export function isListenAddress(value: unknown): boolean {
  return typeof value === 'string' && typeof parseHostPort(value, 0) !== 'string';
}

/** A listener address already checked with {@link isListenAddress}. */
export function listenAddress(value: string): HostPort {
  const parsed = parseHostPort(value, 0);
  if (typeof parsed === 'string') throw new Error(parsed);
  return parsed;
}
