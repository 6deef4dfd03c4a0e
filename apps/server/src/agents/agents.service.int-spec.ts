import { Logger } from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  EMBEDDED_SERIAL_REASON,
  isEmbeddedRun,
  useTestDatabase,
  type TestDatabase,
} from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { AuditRecordEntity } from '../audit/audit-record.entity.js';
import { AuditRepository } from '../audit/audit.repository.js';
import { AuditService } from '../audit/audit.service.js';
import { InProcessEntryChangeNotifier } from '../entries/entry-change-notifier.js';
import { AgentEntity } from './agent.entity.js';
import { AgentsRepository, type AttestedAgentRecord } from './agents.repository.js';
import { AgentsService, UNUSED_SVID_REPLACED_ACTION } from './agents.service.js';
import { UNUSED_SVID_REPLACEMENTS } from './agent.js';
import { AppError } from '../common/errors.js';

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
      new AuditService(new AuditRepository(db.dataSource.getRepository(AuditRecordEntity)), clock),
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

  const auditOf = async (agent: string) =>
    (await db.dataSource.query(
      `SELECT actor, action, target, result, status_code FROM audit_log WHERE actor = $1 ORDER BY id`,
      [agent],
    )) as { actor: string; action: string; target: string; result: string; status_code: number }[];

  it('logs (warn) and audits every replacement of an unused renewed SVID, naming the agent and both serials', async () => {
    const warn = vi.spyOn(Logger.prototype, 'warn');
    try {
      await agents.recordAttestation(record('w'));
      const next = (serialNumber: string) => ({ serialNumber, svidExpiresAt: new Date(Date.UTC(2026, 0, 3)) });
      await agents.recordRenewal(agentId('w'), 'serial-w', next('serial-w2'));
      // A first renewal replaces nothing: neither logged as a replacement nor audited.
      expect(await auditOf(agentId('w'))).toEqual([]);
      expect(warn).not.toHaveBeenCalled();
      await agents.recordRenewal(agentId('w'), 'serial-w', next('serial-w3'));
      expect(await auditOf(agentId('w'))).toEqual([
        {
          actor: agentId('w'),
          action: UNUSED_SVID_REPLACED_ACTION,
          target: `${agentId('w')},replaced=serial-w2,new=serial-w3`,
          result: 'ok',
          status_code: 200,
        },
      ]);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn.mock.calls[0]![0]).toMatchObject({
        agentId: agentId('w'),
        currentSerial: 'serial-w',
        replacedSerial: 'serial-w2',
        newSerial: 'serial-w3',
      });
      // Used, the renewed SVID becomes current: the next renewal replaces nothing.
      await agents.requireActive(agentId('w'), 'serial-w3');
      await agents.recordRenewal(agentId('w'), 'serial-w3', next('serial-w4'));
      expect(await auditOf(agentId('w'))).toHaveLength(1);
    } finally {
      warn.mockRestore();
    }
  });

  it('refuses a renewal past the bound of replacements in the window (429, logged, audited), until the window ends', async () => {
    const { max, windowMs } = UNUSED_SVID_REPLACEMENTS;
    await agents.recordAttestation(record('cap'));
    const next = (n: number) => ({ serialNumber: `serial-cap-${n}`, svidExpiresAt: new Date(Date.UTC(2026, 0, 3)) });
    await agents.recordRenewal(agentId('cap'), 'serial-cap', next(0));
    const windowStart = clock.now().getTime();
    for (let n = 1; n <= max; n++) {
      clock.advance(1000);
      expect(await agents.recordRenewal(agentId('cap'), 'serial-cap', next(n))).toMatchObject({
        newSerialNumber: `serial-cap-${n}`,
      });
    }
    clock.advance(1000);
    const refused = (await agents
      .recordRenewal(agentId('cap'), 'serial-cap', next(max + 1))
      .catch((error: unknown) => error)) as AppError;
    expect(refused).toBeInstanceOf(AppError);
    expect(refused.kind).toBe('resource_exhausted');
    expect(refused.message).toContain(`already replaced its unused renewed SVID ${max} times`);
    expect(refused.message).toContain(`serial serial-cap-${max} is`);
    expect(refused.retryAfterSeconds).toBe(Math.ceil((windowStart + 1000 + windowMs - clock.now().getTime()) / 1000));
    // Nothing written: the pending serial and the current one stay as they were.
    expect(await agents.get(agentId('cap'))).toMatchObject({
      serialNumber: 'serial-cap',
      newSerialNumber: `serial-cap-${max}`,
    });
    const audit = await auditOf(agentId('cap'));
    expect(audit).toHaveLength(max + 1);
    expect(audit.at(-1)).toEqual({
      actor: agentId('cap'),
      action: UNUSED_SVID_REPLACED_ACTION,
      target: `${agentId('cap')},pending=serial-cap-${max}`,
      result: 'resource_exhausted',
      status_code: 429,
    });
    // A banned or outdated caller is still told so, not that it renews too often.
    await expect(agents.recordRenewal(agentId('cap'), 'stale', next(max + 2))).rejects.toMatchObject({
      kind: 'permission_denied',
    });
    // The window (from its first replacement) over, the agent may replace again.
    clock.advance(windowMs);
    expect(await agents.recordRenewal(agentId('cap'), 'serial-cap', next(max + 3))).toMatchObject({
      newSerialNumber: `serial-cap-${max + 3}`,
    });
    // Re-attestation starts the count again.
    for (let n = 1; n < max; n++) await agents.recordRenewal(agentId('cap'), 'serial-cap', next(100 + n));
    await expect(agents.recordRenewal(agentId('cap'), 'serial-cap', next(200))).rejects.toMatchObject({
      kind: 'resource_exhausted',
    });
    await agents.recordAttestation(record('cap', { serialNumber: 'serial-cap-again' }));
    await agents.recordRenewal(agentId('cap'), 'serial-cap-again', next(300));
    for (let n = 1; n <= max; n++) await agents.recordRenewal(agentId('cap'), 'serial-cap-again', next(300 + n));
    await expect(agents.recordRenewal(agentId('cap'), 'serial-cap-again', next(400))).rejects.toMatchObject({
      kind: 'resource_exhausted',
    });
  });

  it.skipIf(isEmbeddedRun())(
    `two replicas renewing at once count every replacement: exactly the bound is recorded (${EMBEDDED_SERIAL_REASON})`,
    async () => {
      const replica = async () =>
        new AgentsService(
          new AgentsRepository((await db.connectAnother()).getRepository(AgentEntity)),
          clock,
          new InProcessEntryChangeNotifier(),
          { agentStatusCacheTtlSeconds: 30 },
          { kind: db.kind },
          new AuditService(new AuditRepository(db.dataSource.getRepository(AuditRecordEntity)), clock),
        );
      const [a, b] = [await replica(), await replica()];
      const { max } = UNUSED_SVID_REPLACEMENTS;
      for (let round = 0; round < 5; round++) {
        const name = `fight${round}`;
        await agents.recordAttestation(record(name));
        const results = await Promise.allSettled(
          Array.from({ length: 2 * (max + 2) }, (_, n) =>
            (n % 2 === 0 ? a : b).recordRenewal(agentId(name), `serial-${name}`, {
              serialNumber: `serial-${name}-${n}`,
              svidExpiresAt: new Date(Date.UTC(2026, 0, 5)),
            }),
          ),
        );
        // The first renewal replaces nothing, then `max` replacements; every other one is refused.
        expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(max + 1);
        for (const result of results) {
          if (result.status === 'rejected') expect(result.reason).toMatchObject({ kind: 'resource_exhausted' });
        }
        const audit = await auditOf(agentId(name));
        expect(audit.filter((row) => row.result === 'ok')).toHaveLength(max);
      }
    },
  );

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
          new AuditService(new AuditRepository(db.dataSource.getRepository(AuditRecordEntity)), clock),
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
