import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { InProcessEntryChangeNotifier } from '../entries/entry-change-notifier.js';
import { AgentEntity } from './agent.entity.js';
import { AgentsRepository, type AttestedAgentRecord } from './agents.repository.js';
import { AgentsService } from './agents.service.js';

const agentId = (name: string): string => `spiffe://example.org/sigil/agent/join_token/${name}`;

function record(name: string, overrides: Partial<AttestedAgentRecord> = {}): AttestedAgentRecord {
  return {
    spiffeId: agentId(name),
    attestationType: 'join_token',
    serialNumber: `serial-${name}`,
    svidExpiresAt: new Date(Date.UTC(2026, 0, 2)),
    selectors: [{ type: 'join_token', value: name }],
    ...overrides,
  };
}

describe('AgentsService', () => {
  let db: TestDatabase;
  let clock: FakeClock;
  let agents: AgentsService;

  beforeAll(async () => {
    db = await useTestDatabase();
    clock = new FakeClock(Date.UTC(2026, 0, 1));
    agents = new AgentsService(
      new AgentsRepository(db.dataSource.getRepository(AgentEntity)),
      clock,
      new InProcessEntryChangeNotifier(),
      { agentStatusCacheTtlSeconds: 30 },
      { kind: db.kind },
    );
    for (const name of ['a', 'b', 'c', 'd', 'e']) await agents.recordAttestation(record(name));
    await agents.recordAttestation(
      record('x', {
        attestationType: 'x509pop',
        selectors: [
          { type: 'x509pop', value: 'subject:cn:host-x' },
          { type: 'x509pop', value: 'ca:fingerprint:ab' },
        ],
      }),
    );
  });

  afterAll(async () => {
    await db?.close();
  });

  it('pages through every agent in SPIFFE ID order, without repeats', async () => {
    const seen: string[] = [];
    let pageToken: string | undefined;
    let pages = 0;
    do {
      const page = await agents.list({}, { pageSize: 2, ...(pageToken && { pageToken }) });
      seen.push(...page.agents.map((agent) => agent.spiffeId));
      pageToken = page.nextPageToken;
      pages += 1;
    } while (pageToken);
    expect(pages).toBe(3);
    expect(seen).toEqual(['a', 'b', 'c', 'd', 'e', 'x'].map(agentId));
  });

  it('filters by attestation type and by selectors (all must match)', async () => {
    const x509 = await agents.list({ attestationType: 'x509pop' });
    expect(x509.agents.map((agent) => agent.spiffeId)).toEqual([agentId('x')]);
    const both = await agents.list({
      selectors: [
        { type: 'x509pop', value: 'subject:cn:host-x' },
        { type: 'x509pop', value: 'ca:fingerprint:ab' },
      ],
    });
    expect(both.agents).toHaveLength(1);
    const none = await agents.list({
      selectors: [
        { type: 'x509pop', value: 'subject:cn:host-x' },
        { type: 'join_token', value: 'a' },
      ],
    });
    expect(none.agents).toHaveLength(0);
    expect(await agents.count({ attestationType: 'join_token' })).toBe(5);
  });

  it('rejects a page token it did not hand out, and a page size out of bounds', async () => {
    await expect(agents.list({}, { pageToken: 'bm90LWFuLWlk' })).rejects.toMatchObject({
      kind: 'invalid_argument',
      message: 'page_token: not a token returned by a previous page',
    });
    await expect(agents.list({}, { pageSize: 0 })).rejects.toMatchObject({
      message: 'page_size: must be an integer from 1 to 500',
    });
  });

  it('finds an agent by a SPIFFE ID written with an uppercase trust domain, and names a malformed one', async () => {
    const agent = await agents.get('SPIFFE://EXAMPLE.ORG/sigil/agent/join_token/a');
    expect(agent.spiffeId).toBe(agentId('a'));
    await expect(agents.get('spiffe://example.org/a/../b')).rejects.toMatchObject({ kind: 'invalid_argument' });
    await expect(agents.get(agentId('zzz'))).rejects.toMatchObject({
      kind: 'not_found',
      message: `agent ${agentId('zzz')} not found`,
    });
  });

  it('bans: the agent stays listed, may not call or re-attest, until evicted', async () => {
    const banned = await agents.ban(agentId('b'));
    expect(banned.banned).toBe(true);
    expect(await agents.count({ banned: true })).toBe(1);
    await expect(agents.requireActive(agentId('b'), 'serial-b')).rejects.toMatchObject({
      kind: 'permission_denied',
      message: `agent ${agentId('b')} is banned`,
    });
    await expect(agents.recordAttestation(record('b'))).rejects.toMatchObject({ kind: 'permission_denied' });
    await expect(
      agents.recordRenewal(agentId('b'), 'serial-b', { serialNumber: 'n', svidExpiresAt: clock.now() }),
    ).rejects.toMatchObject({ kind: 'permission_denied' });

    await agents.evict(agentId('b'));
    await expect(agents.get(agentId('b'))).rejects.toMatchObject({ kind: 'not_found' });
    await expect(agents.requireActive(agentId('b'), 'serial-b')).rejects.toMatchObject({ kind: 'permission_denied' });
    const again = await agents.recordAttestation(record('b', { serialNumber: 'serial-b2' }));
    expect(again.banned).toBe(false);
    await expect(agents.evict(agentId('nope'))).rejects.toMatchObject({ kind: 'not_found' });
    await expect(agents.ban(agentId('nope'))).rejects.toMatchObject({ kind: 'not_found' });
  });

  it('renews only from the current serial, and then refuses the old one', async () => {
    await expect(
      agents.recordRenewal(agentId('c'), 'stale', { serialNumber: 'serial-c2', svidExpiresAt: clock.now() }),
    ).rejects.toMatchObject({ kind: 'permission_denied' });
    clock.advance(1000);
    const renewed = await agents.recordRenewal(agentId('c'), 'serial-c', {
      serialNumber: 'serial-c2',
      svidExpiresAt: new Date(Date.UTC(2026, 0, 3)),
    });
    expect(renewed.serialNumber).toBe('serial-c2');
    expect(renewed.lastSeenAt).toEqual(clock.now());
    await expect(agents.requireActive(agentId('c'), 'serial-c')).rejects.toMatchObject({
      message: `agent ${agentId('c')}: SVID serial serial-c is not the current one`,
    });
    expect((await agents.requireActive(agentId('c'), 'serial-c2')).spiffeId).toBe(agentId('c'));
  });
});
