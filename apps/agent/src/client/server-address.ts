import { type HostPort, parseHostPort } from '@sigil/runtime';

/** Where a server's agent API listens: `HOST:PORT`, with IPv6 addresses written `[::1]:8081`. */
export type ServerAddress = HostPort;

/** Parses `HOST:PORT`; returns the broken rule as a message when it is not one. */
export function parseServerAddress(value: string): ServerAddress | string {
  return parseHostPort(value);
}
