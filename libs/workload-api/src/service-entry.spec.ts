import { describe, expect, it } from 'vitest';
import * as root from './index.js';
import * as service from './service-entry.js';

// The agent's server imports `@sigil/workload-api/service` (without the client); the root re-exports it, so both
// entry points hand out the same service definition and schemas, never a second copy.
describe('@sigil/workload-api/service', () => {
  it('exports the same service and schemas as the root entry point', () => {
    expect(Object.keys(service).sort()).toEqual(
      [
        'JWTBundlesRequestSchema',
        'JWTBundlesResponseSchema',
        'JWTSVIDRequestSchema',
        'JWTSVIDResponseSchema',
        'JWTSVIDSchema',
        'SpiffeWorkloadAPI',
        'ValidateJWTSVIDRequestSchema',
        'ValidateJWTSVIDResponseSchema',
        'X509BundlesRequestSchema',
        'X509BundlesResponseSchema',
        'X509SVIDRequestSchema',
        'X509SVIDResponseSchema',
        'X509SVIDSchema',
        'file_workload',
      ].sort(),
    );
    for (const [name, value] of Object.entries(service)) expect(root[name as keyof typeof root]).toBe(value);
    expect(service.SpiffeWorkloadAPI.typeName).toBe('SpiffeWorkloadAPI');
  });
});
