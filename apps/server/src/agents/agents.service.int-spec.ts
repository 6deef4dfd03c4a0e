import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EMBEDDED_SERIAL_REASON,
  isEmbeddedRun,
  useTestDatabase,
  type TestDatabase,
} from '../../../../test/support/database.js';
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

  it('renews only from the current serial; the old one stays valid until the new one is used', async () => {
    await expect(
      agents.recordRenewal(agentId('c'), 'stale', { serialNumber: 'serial-c2', svidExpiresAt: clock.now() }),
    ).rejects.toMatchObject({ kind: 'permission_denied' });
    clock.advance(1000);
    const renewed = await agents.recordRenewal(agentId('c'), 'serial-c', {
      serialNumber: 'serial-c2',
      svidExpiresAt: new Date(Date.UTC(2026, 0, 3)),
    });
    expect(renewed).toMatchObject({ serialNumber: 'serial-c', newSerialNumber: 'serial-c2' });
    expect(renewed.lastSeenAt).toEqual(clock.now());
    // The agent may have lost the renewal (killed before saving it): its previous SVID still works.
    expect((await agents.requireActive(agentId('c'), 'serial-c')).serialNumber).toBe('serial-c');
    const promoted = await agents.requireActive(agentId('c'), 'serial-c2');
    expect(promoted).toMatchObject({ serialNumber: 'serial-c2', newSerialNumber: null, newSvidExpiresAt: null });
    expect(promoted.svidExpiresAt).toEqual(new Date(Date.UTC(2026, 0, 3)));
    expect(await agents.get(agentId('c'))).toMatchObject({ serialNumber: 'serial-c2', newSerialNumber: null });
    await expect(agents.requireActive(agentId('c'), 'serial-c')).rejects.toMatchObject({
      message: `agent ${agentId('c')}: SVID serial serial-c is not the current one`,
    });
    expect((await agents.requireActive(agentId('c'), 'serial-c2')).serialNumber).toBe('serial-c2');
    await expect(
      agents.recordRenewal(agentId('c'), 'serial-c', { serialNumber: 'serial-c3', svidExpiresAt: clock.now() }),
    ).rejects.toMatchObject({ kind: 'permission_denied' });
  });

  it('renewing again with the previous serial (the new SVID was lost) replaces the new one', async () => {
    await agents.recordAttestation(record('r'));
    const expiry = (day: number) => new Date(Date.UTC(2026, 0, day));
    await agents.recordRenewal(agentId('r'), 'serial-r', { serialNumber: 'serial-r2', svidExpiresAt: expiry(3) });
    const again = await agents.recordRenewal(agentId('r'), 'serial-r', {
      serialNumber: 'serial-r3',
      svidExpiresAt: expiry(4),
    });
    expect(again).toMatchObject({
      serialNumber: 'serial-r',
      newSerialNumber: 'serial-r3',
      newSvidExpiresAt: expiry(4),
    });
    // The lost one is no longer honoured; the old one and the latest are.
    await expect(agents.requireActive(agentId('r'), 'serial-r2')).rejects.toMatchObject({ kind: 'permission_denied' });
    expect((await agents.requireActive(agentId('r'), 'serial-r')).serialNumber).toBe('serial-r');
    expect(await agents.requireActive(agentId('r'), 'serial-r3')).toMatchObject({
      serialNumber: 'serial-r3',
      svidExpiresAt: expiry(4),
    });
    await expect(agents.requireActive(agentId('r'), 'serial-r')).rejects.toMatchObject({ kind: 'permission_denied' });
  });

  it('refuses both serials of a banned agent, and re-attestation forgets a pending renewal', async () => {
    await agents.recordAttestation(record('bb', { attestationType: 'x509pop' }));
    await agents.recordRenewal(agentId('bb'), 'serial-bb', { serialNumber: 'serial-bb2', svidExpiresAt: clock.now() });
    const banned = await agents.ban(agentId('bb'));
    expect(banned.newSerialNumber).toBeNull();
    for (const serial of ['serial-bb', 'serial-bb2']) {
      await expect(agents.requireActive(agentId('bb'), serial)).rejects.toMatchObject({
        message: `agent ${agentId('bb')} is banned`,
      });
    }
    expect(await agents.get(agentId('bb'))).toMatchObject({ serialNumber: 'serial-bb', newSerialNumber: null });
    await agents.evict(agentId('bb'));

    await agents.recordAttestation(record('ra', { attestationType: 'x509pop' }));
    await agents.recordRenewal(agentId('ra'), 'serial-ra', { serialNumber: 'serial-ra2', svidExpiresAt: clock.now() });
    const reattested = await agents.recordAttestation(
      record('ra', { attestationType: 'x509pop', serialNumber: 'serial-ra3' }),
    );
    expect(reattested).toMatchObject({ serialNumber: 'serial-ra3', newSerialNumber: null });
    for (const serial of ['serial-ra', 'serial-ra2']) {
      await expect(agents.requireActive(agentId('ra'), serial)).rejects.toMatchObject({ kind: 'permission_denied' });
    }
  });

  it.skipIf(isEmbeddedRun())(
    `two replicas promoting the new serial at once: both accept it, the old one is refused (${EMBEDDED_SERIAL_REASON})`,
    async () => {
      const replica = async () =>
        new AgentsService(
          new AgentsRepository((await db.connectAnother()).getRepository(AgentEntity)),
          clock,
          new InProcessEntryChangeNotifier(),
          { agentStatusCacheTtlSeconds: 30 },
          { kind: db.kind },
        );
      const [a, b] = [await replica(), await replica()];
      for (let round = 0; round < 20; round++) {
        const name = `race${round}`;
        await agents.recordAttestation(record(name));
        await a.requireActive(agentId(name), `serial-${name}`);
        await b.requireActive(agentId(name), `serial-${name}`);
        await agents.recordRenewal(agentId(name), `serial-${name}`, {
          serialNumber: `serial-${name}-2`,
          svidExpiresAt: new Date(Date.UTC(2026, 0, 5)),
        });
        const both = await Promise.all([a, b].map((r) => r.requireActive(agentId(name), `serial-${name}-2`)));
        for (const agent of both) {
          expect(agent).toMatchObject({ serialNumber: `serial-${name}-2`, newSerialNumber: null });
        }
        expect((await agents.get(agentId(name))).svidExpiresAt).toEqual(new Date(Date.UTC(2026, 0, 5)));
        for (const r of [a, b]) {
          await expect(r.requireActive(agentId(name), `serial-${name}`)).rejects.toMatchObject({
            kind: 'permission_denied',
          });
        }
      }
    },
  );
});
