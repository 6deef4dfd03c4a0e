import { describe, expect, it } from 'vitest';
import { SPIFFE_ENDPOINT_SOCKET, parseWorkloadApiAddress, resolveWorkloadApiAddress } from './address.js';
import { WorkloadApiError } from './errors.js';

describe('parseWorkloadApiAddress (SPIFFE_Workload_Endpoint.md §4)', () => {
  it.each([
    ['unix:///tmp/agent.sock', { kind: 'unix', path: '/tmp/agent.sock' }],
    ['unix:/tmp/agent.sock', { kind: 'unix', path: '/tmp/agent.sock' }],
    ['UNIX:///run/spire/agent.sock', { kind: 'unix', path: '/run/spire/agent.sock' }],
    ['unix:///tmp/with%20space.sock', { kind: 'unix', path: '/tmp/with space.sock' }],
    ['tcp://127.0.0.1:8000', { kind: 'tcp', host: '127.0.0.1', port: 8000 }],
    ['tcp://[::1]:8000', { kind: 'tcp', host: '::1', port: 8000 }],
    ['tcp://10.0.0.1:65535', { kind: 'tcp', host: '10.0.0.1', port: 65535 }],
  ])('accepts %s', (value, expected) => {
    expect(parseWorkloadApiAddress(value)).toEqual(expected);
  });

  it.each([
    ['', 'must be a non-empty uri'],
    ['/tmp/agent.sock', 'is not a valid uri'],
    ['http://127.0.0.1:8000', 'scheme must be unix or tcp'],
    ['unix://tmp/agent.sock', 'unix uri must not have an authority (use unix:///absolute/path)'],
    ['unix://host/tmp/agent.sock', 'unix uri must not have an authority (use unix:///absolute/path)'],
    ['unix:relative/agent.sock', 'unix uri path must be absolute'],
    ['unix://', 'unix uri must include the path of the socket'],
    ['unix:///', 'unix uri must include the path of the socket'],
    ['unix:///tmp/agent.sock?x=1', 'must not include a query'],
    ['unix:///tmp/agent.sock#frag', 'must not include a fragment'],
    ['unix:///tmp/bad%ZZ.sock', 'unix uri path has invalid percent-encoding'],
    ['tcp://localhost:8000', 'tcp uri host must be an ip address, not a dns name'],
    ['tcp://127.1:8000', 'tcp uri host must be an ip address, not a dns name'],
    ['tcp://127.0.0.1', 'tcp uri must include a port'],
    ['tcp://127.0.0.1:0', 'tcp uri port must be between 1 and 65535'],
    ['tcp://127.0.0.1:70000', 'is not a valid uri'],
    ['tcp://127.0.0.1:8000/', 'tcp uri must not include a path'],
    ['tcp://127.0.0.1:8000/foo', 'tcp uri must not include a path'],
    ['tcp://127.0.0.1:8000?x=1', 'must not include a query'],
    ['tcp://127.0.0.1:8000?', 'must not include a query'],
    ['tcp://127.0.0.1:8000#x', 'must not include a fragment'],
    ['tcp://user:pass@127.0.0.1:8000', 'must not include user info'],
    ['tcp:127.0.0.1:8000', 'tcp uri must include a host'],
  ])('refuses %j: %s', (value, rule) => {
    const error = (() => {
      try {
        parseWorkloadApiAddress(value);
      } catch (caught) {
        return caught;
      }
      throw new Error('expected a failure');
    })();
    expect(error).toBeInstanceOf(WorkloadApiError);
    expect(error).toMatchObject({ code: 'ERR_ADDRESS_INVALID' });
    expect((error as Error).message).toBe(`workload api address ${JSON.stringify(value)}: ${rule}`);
  });
});

describe('resolveWorkloadApiAddress', () => {
  it('prefers the explicit address over SPIFFE_ENDPOINT_SOCKET', () => {
    const env = { [SPIFFE_ENDPOINT_SOCKET]: 'unix:///from/env.sock' };
    expect(resolveWorkloadApiAddress('tcp://127.0.0.1:1234', env)).toEqual({
      kind: 'tcp',
      host: '127.0.0.1',
      port: 1234,
    });
    expect(resolveWorkloadApiAddress(undefined, env)).toEqual({ kind: 'unix', path: '/from/env.sock' });
  });

  it('validates the environment variable by the same rules', () => {
    expect(() => resolveWorkloadApiAddress(undefined, { [SPIFFE_ENDPOINT_SOCKET]: 'tcp://example.org:80' })).toThrow(
      'workload api address "tcp://example.org:80": tcp uri host must be an ip address, not a dns name',
    );
  });

  it('fails clearly when nothing is configured', () => {
    expect(() => resolveWorkloadApiAddress(undefined, {})).toThrow(
      'workload api address is not configured: pass address or set SPIFFE_ENDPOINT_SOCKET',
    );
  });
});
