/**
 * The README's "Writing an attestor" example, run for real: a workload attestor registered here in one line, built
 * by the registry from the agent's configuration, run by the composite next to the unix attestor, behind the real
 * Workload API server on a real socket and the agent's real SVID cache, called by the Node client library.
 */
import { webcrypto } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Selector, systemClock } from '@sigil/runtime';
import { SpiffeId, TrustBundle, TrustDomain, signJwtSvid } from '@sigil/spiffe';
import { WorkloadApiClient } from '@sigil/workload-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testEntry } from '../../../../../test/support/fake-agent-api.js';
import { type AgentEntry } from '@sigil/agent-api';
import { loadAgentConfig } from '../../config.js';
import { PerUidAttestationLimit } from '../../endpoints/workload-api/attestation-limit.js';
import { WorkloadApiHandler } from '../../endpoints/workload-api/workload-api.handler.js';
import { WorkloadApiServer } from '../../endpoints/workload-api/workload-api.server.js';
import { JwtSvidCache } from '../../manager/jwt-svid-cache.js';
import { SvidCache } from '../../manager/svid-cache.js';
import { WORKLOAD_ATTESTORS, createWorkloadAttestors } from './registry.js';
import { type WorkloadAttestor, type WorkloadCaller } from './workload-attestor.js';

// ---- the example, as the README shows it (in the agent it would be uid-parity/uid-parity-attestor.ts) ----

/** `uid_parity:even` or `uid_parity:odd`: whether the caller's uid is even. */
class UidParityAttestor implements WorkloadAttestor {
  readonly type = 'uid_parity';

  async attest(caller: WorkloadCaller, signal: AbortSignal): Promise<readonly Selector[]> {
    signal.throwIfAborted();
    return [{ type: this.type, value: caller.uid % 2 === 0 ? 'even' : 'odd' }];
  }
}

// The one registration line (in the agent: in WORKLOAD_ATTESTORS, registry.ts).
const registry = { ...WORKLOAD_ATTESTORS, uid_parity: { optionNames: [], create: () => new UidParityAttestor() } };

// ---- the test ----

const quiet = { debug: () => undefined, warn: () => undefined, log: () => undefined };
const td = TrustDomain.parse('example.org');
const uid = process.geteuid!();
const parity = uid % 2 === 0 ? 'even' : 'odd';
const otherParity = uid % 2 === 0 ? 'odd' : 'even';

function entry(path: string, selectors: Selector[]): AgentEntry {
  return testEntry(SpiffeId.fromPath(td, path), { id: path.slice(1), selectors });
}

describe('Writing a workload attestor: the README example', () => {
  let dir: string;
  let server: WorkloadApiServer;
  let client: WorkloadApiClient;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-example-attestor-'));
    const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    const { x, y } = await webcrypto.subtle.exportKey('jwk', keys.publicKey);
    // The agent's SVID cache; JWT-SVIDs are signed here, where the agent would ask its server.
    const cache = new SvidCache(
      new JwtSvidCache(async (entryId, audience) => {
        const spiffeId = SpiffeId.fromPath(td, `/${entryId}`);
        const expiresAt = new Date(Date.now() + 300_000);
        const token = await signJwtSvid({ spiffeId, audience, expiresAt, privateKey: keys.privateKey, kid: 'k1' });
        return { spiffeId, token, expiresAt };
      }),
    );
    cache.applySync({
      revision: 1,
      full: true,
      entries: [
        entry('/parity-and-uid', [
          { type: 'uid_parity', value: parity },
          { type: 'unix', value: `uid:${uid}` },
        ]),
        entry('/other-parity', [{ type: 'uid_parity', value: otherParity }]),
        entry('/uid-only', [{ type: 'unix', value: `uid:${uid}` }]),
      ],
      deletedIds: [],
      bundle: TrustBundle.create(td, { jwtAuthorities: { k1: { kty: 'EC', crv: 'P-256', x, y } } }),
      federatedBundles: [],
    });
    const config = {
      ...loadAgentConfig({
        flags: { serverAddress: ['127.0.0.1:8081'], insecureBootstrap: true, trustDomain: td.name },
      }),
      // What `--workload-attestor unix,uid_parity` gives once the attestor is registered in WORKLOAD_ATTESTORS.
      workloadAttestors: [
        { type: 'unix', options: {} },
        { type: 'uid_parity', options: {} },
      ],
    };
    const attestors = createWorkloadAttestors({ config, clock: systemClock, cache }, registry);
    await attestors.prepare();
    const handler = new WorkloadApiHandler(
      new PerUidAttestationLimit(attestors, config.workloadApiLimits.maxAttestationsPerUid),
      cache,
      { logger: quiet },
    );
    const socketPath = join(dir, 'public', 'api.sock');
    server = new WorkloadApiServer({ socketPath, service: handler.service(), logger: quiet });
    await server.start();
    client = new WorkloadApiClient({ address: `unix://${socketPath}` });
  });

  afterAll(async () => {
    await client?.close();
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("gives the caller the entries its selectors match: the example's merged with the unix attestor's", async () => {
    const svids = await client.fetchJwtSvids({ audience: 'example' });
    expect(svids.map((svid) => svid.spiffeId.toString()).sort()).toEqual([
      'spiffe://example.org/parity-and-uid',
      'spiffe://example.org/uid-only',
    ]);
  });
});
