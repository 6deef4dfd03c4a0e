import { isIP } from 'node:net';

/** Where a server's agent API listens: `HOST:PORT`, with IPv6 addresses written `[::1]:8081`. */
export interface ServerAddress {
  /** Host name or IP address (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
  /** `host:port`, with brackets around an IPv6 address. */
  readonly text: string;
}

const HOST_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** Parses `HOST:PORT`; returns the broken rule as a message when it is not one. */
export function parseServerAddress(value: string): ServerAddress | string {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  if (match === null) return `must be HOST:PORT (IPv6 as [ADDRESS]:PORT), got '${value}'`;
  const port = Number(match[3]);
  if (port < 1 || port > 65535) return `port must be from 1 to 65535, got '${value}'`;
  const bracketed = match[1];
  if (bracketed !== undefined) {
    if (isIP(bracketed) !== 6) return `${bracketed} in brackets must be an IPv6 address, got '${value}'`;
    return { host: bracketed, port, text: `[${bracketed}]:${port}` };
  }
  const host = match[2] as string;
  if (isIP(host) === 0 && !HOST_NAME.test(host)) return `host must be a host name or IP address, got '${value}'`;
  return { host, port, text: `${host}:${port}` };
}
