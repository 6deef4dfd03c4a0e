import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { AgentEntity } from '../agents/agent.entity.js';
import { AuditRecordEntity } from '../audit/audit-record.entity.js';
import { AdminTokenEntity } from '../auth/admin-token.entity.js';
import { BundleEntity } from '../bundle/bundle.entity.js';
import { CaKeyEntity } from '../ca/ca-key.entity.js';
import { CA_KEYS_REVISION_SEQUENCE } from '../ca/ca-keys.repository.js';
import { EntryEventEntity, RevisionCounterEntity } from '../entries/entry-event.entity.js';
import { DnsNameEntity, EntryEntity, FederatedTrustDomainEntity, SelectorEntity } from '../entries/entry.entity.js';
import { JoinTokenEntity } from '../join-tokens/join-token.entity.js';
import { X509popChallengeEntity } from '../node-attestation/x509pop/x509pop-challenge.entity.js';
import { SCHEMA_VERSION } from './data-source.js';
import { type ExportFile, TransferError, exportDatabase, importDatabase } from './transfer.js';

const kind = process.env.DATABASE_URL ? 'postgres' : 'embedded';
const at = (iso: string) => new Date(iso);

/** One or more rows in every table, with every column type: bytea, jsonb, bigint, nullable timestamps, hashes. */
async function seed(db: TestDatabase): Promise<void> {
  const manager = db.dataSource.manager;
  const entryId = randomUUID();
  await manager.insert(EntryEntity, {
    id: entryId,
    spiffeId: 'spiffe://example.org/web',
    parentId: 'spiffe://example.org/host/a',
    x509SvidTtl: 0,
    jwtSvidTtl: 300,
    admin: false,
    downstream: true,
    hint: 'web',
    expiresAt: null,
    revisionNumber: 2,
    createdAt: at('2026-01-01T00:00:00.123Z'),
    updatedAt: at('2026-01-02T00:00:00Z'),
  });
  await manager.insert(SelectorEntity, [
    { entryId, type: 'unix', value: 'uid:1000' },
    { entryId, type: 'unix', value: 'gid:1000' },
  ]);
  await manager.insert(DnsNameEntity, { entryId, value: 'web.example.org' });
  await manager.insert(FederatedTrustDomainEntity, { entryId, trustDomain: 'other.example' });
  await manager.insert(EntryEventEntity, [
    { revision: 1, entryId, op: 'created', changedAt: at('2026-01-01T00:00:00Z') },
    { revision: 2, entryId, op: 'updated', changedAt: at('2026-01-02T00:00:00Z') },
  ]);
  await manager.update(RevisionCounterEntity, { name: 'entries' }, { revision: 2, prunedThrough: 0 });
  await manager.insert(AdminTokenEntity, {
    name: 'ops',
    tokenHash: randomBytes(32).toString('hex'),
    createdAt: at('2026-01-01T00:00:00Z'),
    expiresAt: null,
    lastUsedAt: at('2026-01-03T00:00:00Z'),
  });
  await manager.insert(AuditRecordEntity, [
    {
      at: at('2026-01-01T00:00:00Z'),
      actor: 'local-admin',
      action: 'entry.create',
      target: entryId,
      result: 'ok',
      statusCode: 201,
    },
    {
      at: at('2026-01-01T00:00:01Z'),
      actor: 'admin-token:ops',
      action: 'agent.ban',
      target: null,
      result: 'not_found',
      statusCode: 404,
    },
  ]);
  await manager.insert(JoinTokenEntity, {
    tokenHash: randomBytes(32).toString('hex'),
    spiffeId: 'spiffe://example.org/host/b',
    createdAt: at('2026-01-01T00:00:00Z'),
    expiresAt: at('2026-01-01T00:10:00Z'),
  });
  await manager.insert(AgentEntity, {
    spiffeId: 'spiffe://example.org/sigil/agent/join_token/abc',
    attestationType: 'join_token',
    serialNumber: 'ab12',
    svidExpiresAt: at('2026-01-01T01:00:00Z'),
    selectors: [{ type: 'join_token', value: 'abc' }],
    canReattest: false,
    banned: true,
    createdAt: at('2026-01-01T00:00:00Z'),
    updatedAt: at('2026-01-01T00:00:00Z'),
    lastSeenAt: null,
  });
  for (const [kind, revision] of [
    ['x509', '7'],
    ['jwt', '9'],
  ] as const) {
    await manager.insert(CaKeyEntity, {
      id: randomUUID(),
      kind,
      state: 'active',
      tainted: false,
      revoked: false,
      keyType: 'ec-p256',
      authorityId: randomBytes(20).toString('hex'),
      encryptedPrivateKey: randomBytes(80),
      publicKeyDer: randomBytes(91),
      certificateDer: kind === 'x509' ? randomBytes(400) : null,
      upstreamChain: null,
      upstreamAuthorities: null,
      notBefore: at('2026-01-01T00:00:00Z'),
      notAfter: at('2026-01-02T00:00:00Z'),
      createdAt: at('2026-01-01T00:00:00Z'),
      activatedAt: at('2026-01-01T00:00:00Z'),
      revision,
    });
  }
  await manager.insert(BundleEntity, {
    trustDomain: 'example.org',
    x509Authorities: [randomBytes(30).toString('base64')],
    jwtAuthorities: [{ kid: 'k1', jwk: { kty: 'EC', crv: 'P-256', x: 'AA', y: 'BB' } }],
    refreshHintSeconds: null,
    sequence: '3',
    updatedAt: at('2026-01-01T00:00:00Z'),
  });
}

describe(`export and import (${kind})`, () => {
  let source: TestDatabase;
  let target: TestDatabase;
  let exported: ExportFile;

  beforeAll(async () => {
    source = await useTestDatabase();
    target = await useTestDatabase();
    await seed(source);
    exported = await exportDatabase(source.dataSource, at('2026-02-01T00:00:00Z'));
  });

  afterAll(async () => {
    await source?.close();
    await target?.close();
  });

  it('writes every table with its columns by database name, secrets sealed or hashed as stored', () => {
    expect(exported).toMatchObject({
      format: 'sigil-server-export',
      format_version: 1,
      schema_version: SCHEMA_VERSION,
      exported_at: '2026-02-01T00:00:00.000Z',
    });
    expect(Object.keys(exported.tables)).toEqual([
      'registered_entries',
      'selectors',
      'dns_names',
      'federated_trust_domains',
      'entry_events',
      'revision_counters',
      'admin_tokens',
      'audit_log',
      'join_tokens',
      'agents',
      'ca_keys',
      'bundles',
      'federation_relationships',
      'shared_jwt_authorities',
    ]);
    expect(exported.tables['revision_counters']).toEqual([{ name: 'entries', revision: 2, pruned_through: 0 }]);
    expect(exported.tables['agents']![0]).toMatchObject({
      banned: true,
      selectors: [{ type: 'join_token', value: 'abc' }],
    });
    expect(exported.tables['admin_tokens']![0]!['token_hash']).toMatch(/^[0-9a-f]{64}$/);
    expect(exported.tables['ca_keys']![0]!['encrypted_private_key']).toMatch(/^[A-Za-z0-9+/]+=*$/);
    // The audit log's identity column is renumbered on import, so it is not written.
    expect(Object.keys(exported.tables['audit_log']![0]!)).not.toContain('id');
  });

  it.each([
    ['not an object', [], 'input: must be a JSON object written by sigil-server export'],
    [
      'another format',
      { format: 'x' },
      "input: format must be 'sigil-server-export' (a file written by sigil-server export)",
    ],
    [
      'another format version',
      { format: 'sigil-server-export', format_version: 2 },
      'input: format_version 2 is not supported; this release reads 1',
    ],
    [
      'another schema version',
      { format: 'sigil-server-export', format_version: 1, schema_version: 'Registry1764000000000', tables: {} },
      `input: schema_version "Registry1764000000000" is not this release's (${SCHEMA_VERSION}); export and import ` +
        'with the same release (upgrade the source first, then export)',
    ],
  ])('refuses a file of %s', async (_name, file, message) => {
    await expect(importDatabase(target.dataSource, file)).rejects.toThrow(new TransferError(message));
  });

  const edited = (edit: (tables: ExportFile['tables']) => void): ExportFile => {
    const copy = structuredClone(exported);
    edit(copy.tables);
    return copy;
  };

  it.each([
    [
      'an unknown table',
      (t: ExportFile['tables']) => (t['nodes'] = []),
      'input: tables.nodes: not a table of this release',
    ],
    [
      'a missing table',
      (t: ExportFile['tables']) => delete t['bundles'],
      'input: tables.bundles: must be an array of rows',
    ],
    [
      'a wrong value',
      (t: ExportFile['tables']) => (t['agents']![0]!['banned'] = 'yes'),
      'input: tables.agents[0].banned: must be true or false, got "yes"',
    ],
    [
      'a missing column',
      (t: ExportFile['tables']) => delete t['agents']![0]!['serial_number'],
      'input: tables.agents[0].serial_number: missing',
    ],
    [
      'an unknown column',
      (t: ExportFile['tables']) => (t['selectors']![1]!['weight'] = 1),
      'input: tables.selectors[1].weight: not a column of selectors',
    ],
    [
      'null where the column is required',
      (t: ExportFile['tables']) => (t['ca_keys']![0]!['public_key_der'] = null),
      'input: tables.ca_keys[0].public_key_der: must not be null',
    ],
    [
      'a bad timestamp',
      (t: ExportFile['tables']) => (t['join_tokens']![0]!['expires_at'] = 'tomorrow'),
      'input: tables.join_tokens[0].expires_at: must be an ISO 8601 timestamp, got "tomorrow"',
    ],
    [
      'bytes that are not base64',
      (t: ExportFile['tables']) => (t['ca_keys']![1]!['encrypted_private_key'] = 'not base64!'),
      'input: tables.ca_keys[1].encrypted_private_key: must be base64, got "not base64!"',
    ],
  ])('refuses a file with %s, naming the place', async (_name, edit, message) => {
    await expect(importDatabase(target.dataSource, edited(edit))).rejects.toThrow(new TransferError(message));
  });

  it('writes nothing when a row breaks a constraint of the database', async () => {
    const orphan = edited((t) => t['selectors']!.push({ entry_id: randomUUID(), type: 'unix', value: 'uid:1' }));
    await expect(importDatabase(target.dataSource, orphan)).rejects.toThrow(/^input: tables\.selectors: .*foreign key/);
    expect(await target.dataSource.getRepository(EntryEntity).count()).toBe(0);
  });

  it('imports into a new database what a new export reads back the same, the CA revision sequence past it', async () => {
    const counts = await importDatabase(target.dataSource, JSON.parse(JSON.stringify(exported)));
    expect(counts).toEqual({
      registered_entries: 1,
      selectors: 2,
      dns_names: 1,
      federated_trust_domains: 1,
      entry_events: 2,
      revision_counters: 1,
      admin_tokens: 1,
      audit_log: 2,
      join_tokens: 1,
      agents: 1,
      ca_keys: 2,
      bundles: 1,
      federation_relationships: 0,
      shared_jwt_authorities: 0,
    });
    const again = await exportDatabase(target.dataSource, at('2026-02-01T00:00:00Z'));
    expect(again).toEqual(exported);
    const [{ next }] = (await target.dataSource.query('SELECT nextval($1)::int AS next', [
      CA_KEYS_REVISION_SEQUENCE,
    ])) as [{ next: number }];
    expect(next).toBe(10);
  });

  it('refuses a database that holds data unless told to replace it, then replaces everything', async () => {
    await expect(importDatabase(target.dataSource, exported)).rejects.toThrow(
      new TransferError(
        'the target database is not empty (registered_entries: 1 row, selectors: 2 rows, dns_names: 1 row, ' +
          'federated_trust_domains: 1 row, entry_events: 2 rows, revision_counters: 1 row, admin_tokens: 1 row, ' +
          'audit_log: 2 rows, join_tokens: 1 row, agents: 1 row, ca_keys: 2 rows, bundles: 1 row); import into a ' +
          'new database, or pass --force to delete everything it holds first',
      ),
    );
    // Something only the target had is gone after the replacing import.
    await target.dataSource.manager.insert(AdminTokenEntity, {
      name: 'only-here',
      tokenHash: 'f'.repeat(64),
      expiresAt: null,
      lastUsedAt: null,
    });
    // An outstanding x509pop challenge (not exported): not answerable in the database that replaced its own.
    await target.dataSource.manager.insert(X509popChallengeEntity, {
      id: randomUUID(),
      nonce: randomBytes(32),
      fingerprint: 'a'.repeat(40),
      publicKeyDer: randomBytes(91),
      selectors: [],
      expiresAt: new Date(Date.now() + 60_000),
    });
    await importDatabase(target.dataSource, exported, { replace: true });
    expect(await exportDatabase(target.dataSource, at('2026-02-01T00:00:00Z'))).toEqual(exported);
    expect(await target.dataSource.manager.count(X509popChallengeEntity)).toBe(0);
  });
});
