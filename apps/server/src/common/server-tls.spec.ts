import { type Server as TlsServer, type SecureContextOptions } from 'node:tls';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { type ServerCredentials, type ServerCredentialSource, ServerTlsRefresher } from './server-tls.js';

/** Records the contexts installed; the refresher only calls setSecureContext on the server. */
class FakeTlsServer {
  readonly contexts: SecureContextOptions[] = [];
  setSecureContext(options: SecureContextOptions): void {
    this.contexts.push(options);
  }
}

describe('ServerTlsRefresher', () => {
  let clock: FakeClock;

  beforeEach(() => {
    vi.useFakeTimers();
    clock = new FakeClock(Date.UTC(2026, 0, 1));
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  function source(lifetimeMs: number, failures: number[] = []): ServerCredentialSource & { issued: number } {
    const state = {
      issued: 0,
      issue(): Promise<ServerCredentials> {
        state.issued += 1;
        if (failures.includes(state.issued)) return Promise.reject(new Error('ca unavailable'));
        return Promise.resolve({
          certificateChainPem: `cert-${state.issued}`,
          privateKeyPem: `key-${state.issued}`,
          trustBundlePem: 'bundle',
          notAfter: new Date(clock.now().getTime() + lifetimeMs),
        });
      },
    };
    return state;
  }

  it('installs a certificate at start, with the bundle as client CA and TLS 1.3', async () => {
    const server = new FakeTlsServer();
    const refresher = new ServerTlsRefresher(server as unknown as TlsServer, source(3600_000), clock);
    await refresher.start();
    expect(server.contexts).toEqual([{ cert: 'cert-1', key: 'key-1', ca: 'bundle', minVersion: 'TLSv1.3' }]);
    refresher.stop();
  });

  it('renews at half the remaining life, at least every minute, and retries after a failure', async () => {
    const server = new FakeTlsServer();
    const credentials = source(20_000, [3]);
    const refresher = new ServerTlsRefresher(server as unknown as TlsServer, credentials, clock);
    await refresher.start();
    await vi.advanceTimersByTimeAsync(9_999);
    expect(server.contexts).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(server.contexts.map((context) => context.cert)).toEqual(['cert-1', 'cert-2']);
    // The third issue fails: the current certificate stays, a retry follows 5 s later.
    await vi.advanceTimersByTimeAsync(10_000);
    expect(server.contexts).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(server.contexts.map((context) => context.cert)).toEqual(['cert-1', 'cert-2', 'cert-4']);
    refresher.stop();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(credentials.issued).toBe(4);
  });

  it('does not listen without a first certificate', async () => {
    const refresher = new ServerTlsRefresher(new FakeTlsServer() as unknown as TlsServer, source(1000, [1]), clock);
    await expect(refresher.start()).rejects.toThrow('ca unavailable');
  });
});
