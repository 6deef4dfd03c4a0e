import { createServer, connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { MAX_SIMULATED_HOSTS, hostAddress } from '../../bench/support/loopback.js';

describe('hostAddress', () => {
  it('names distinct loopback addresses with no octet 0 or 255 after the first', () => {
    const seen = new Set<string>();
    const misfits: string[] = [];
    for (const index of [...Array.from({ length: 70_000 }, (_, i) => i), MAX_SIMULATED_HOSTS - 1]) {
      const address = hostAddress(index);
      const [first, ...rest] = address.split('.').map(Number);
      if (first !== 127 || rest.length !== 3 || rest.some((octet) => !(octet >= 1 && octet <= 254))) {
        misfits.push(address);
      }
      seen.add(address);
    }
    expect(misfits).toEqual([]);
    expect(seen.has('127.0.0.1')).toBe(false);
    expect(seen.size).toBe(70_001);
    expect(hostAddress(0)).toBe('127.20.1.1');
    expect(hostAddress(250)).toBe('127.20.2.1');
    expect(hostAddress(62_500)).toBe('127.21.1.1');
  });

  it('refuses an index it cannot map', () => {
    for (const bad of [-1, 0.5, MAX_SIMULATED_HOSTS, Number.NaN]) {
      expect(() => hostAddress(bad)).toThrow(RangeError);
    }
  });

  it('is an address a client can connect from, seen as such by the server', async () => {
    const server = createServer((socket) => socket.end(String(socket.remoteAddress)));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    try {
      const seen = await new Promise<string>((resolve, reject) => {
        const socket = connect({ host: '127.0.0.1', port, localAddress: hostAddress(1234) });
        let text = '';
        socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
      });
      expect(seen).toBe(hostAddress(1234));
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
