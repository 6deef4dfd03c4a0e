import { describe, expect, it } from 'vitest';
import type { Entry, EntryChanges, EntryEvent } from '../entries/entry.js';
import { EntryGraph, type AgentIdentity } from './entry-graph.js';

const SERVER = 'spiffe://td/sigil/server';
const A: AgentIdentity = { spiffeId: 'spiffe://td/sigil/agent/a', nodeSelectors: new Set(['k8s:cluster:one', 'x:y']) };
const B: AgentIdentity = { spiffeId: 'spiffe://td/sigil/agent/b', nodeSelectors: new Set(['k8s:cluster:two']) };

function entry(id: string, spiffeId: string, parentId: string, selectors = ['unix:uid:1'], revision = 1): Entry {
  return {
    id,
    spiffeId,
    parentId,
    selectors: selectors.map((text) => {
      const colon = text.indexOf(':');
      return { type: text.slice(0, colon), value: text.slice(colon + 1) };
    }),
    x509SvidTtl: 0,
    jwtSvidTtl: 0,
    dnsNames: [],
    federatesWith: [],
    admin: false,
    downstream: false,
    hint: '',
    expiresAt: null,
    revisionNumber: revision,
    createdAt: new Date(0),
    updatedAt: new Date(0),
  };
}

/** A delta of the change log: `upserts` and `deletes` in revision order from `from + 1`. */
function changes(
  from: number,
  steps: ({ put: Entry } | { del: string })[],
): Extract<EntryChanges, { resyncRequired: false }> {
  const events: EntryEvent[] = steps.map((step, index) => ({
    revision: from + index + 1,
    entryId: 'put' in step ? step.put.id : step.del,
    op: 'put' in step ? 'updated' : 'deleted',
  }));
  const final = new Map<string, Entry | undefined>();
  for (const step of steps) final.set('put' in step ? step.put.id : step.del, 'put' in step ? step.put : undefined);
  return {
    resyncRequired: false,
    fromRevision: from,
    toRevision: from + steps.length,
    events,
    entries: [...final.values()].filter((value): value is Entry => value !== undefined),
    deletedIds: [...final].filter(([, value]) => value === undefined).map(([id]) => id),
    more: false,
  };
}

/** A snapshot's entries by id. */
const byId = (entries: readonly Entry[]): Map<string, Entry> => new Map(entries.map((e) => [e.id, e]));

const ids = (entries: Iterable<Entry> | ReadonlyMap<string, Entry>): string[] =>
  [...(entries instanceof Map ? entries.values() : (entries as Iterable<Entry>))].map((e) => e.id).sort();

/**
 * own ← child ← grandchild under A; alias (server-parented, selectors of A) ← viaAlias; b1 for agent B; orphan under
 * a parent nobody is authorised for.
 */
function registry(): EntryGraph {
  const graph = new EntryGraph(SERVER);
  graph.load({
    revision: 5,
    entries: byId([
      entry('own', 'spiffe://td/own', A.spiffeId),
      entry('child', 'spiffe://td/child', 'spiffe://td/own'),
      entry('grandchild', 'spiffe://td/grandchild', 'spiffe://td/child'),
      entry('alias', 'spiffe://td/cluster/one', SERVER, ['k8s:cluster:one']),
      entry('viaAlias', 'spiffe://td/w', 'spiffe://td/cluster/one'),
      entry('partialAlias', 'spiffe://td/cluster/mixed', SERVER, ['k8s:cluster:one', 'k8s:zone:z']),
      entry('b1', 'spiffe://td/b1', B.spiffeId),
      entry('orphan', 'spiffe://td/orphan', 'spiffe://td/cluster/two'),
    ]),
  });
  return graph;
}

describe('EntryGraph.authorised', () => {
  it('gives an agent its entries, their descendants and node aliases whose selectors it all has', () => {
    const graph = registry();
    expect(ids(graph.authorised(A))).toEqual(['alias', 'child', 'grandchild', 'own', 'viaAlias']);
    expect(ids(graph.authorised(B))).toEqual(['b1']);
  });

  it('never follows an alias whose selectors are empty, and survives parent cycles', () => {
    const graph = new EntryGraph(SERVER);
    graph.load({
      revision: 1,
      entries: byId([
        entry('empty', 'spiffe://td/all', SERVER, []),
        entry('loop1', 'spiffe://td/l1', 'spiffe://td/l2'),
        entry('loop2', 'spiffe://td/l2', 'spiffe://td/l1'),
        entry('door', 'spiffe://td/l1', A.spiffeId),
      ]),
    });
    expect(ids(graph.authorised(A))).toEqual(['door', 'loop1', 'loop2']);
    expect(ids(graph.authorised(B))).toEqual([]);
  });
});

describe('EntryGraph.deltaSince', () => {
  it.each([
    ['revision 0', 0],
    ['a revision ahead of the graph', 6],
  ])('answers in full from %s', (_name, since) => {
    const delta = registry().deltaSince(A, since);
    expect(delta.full).toBe(true);
    expect(ids(delta.entries)).toEqual(['alias', 'child', 'grandchild', 'own', 'viaAlias']);
  });

  it('answers nothing when nothing changed since the revision', () => {
    expect(registry().deltaSince(A, 5)).toEqual({ full: false, revision: 5, entries: [], deletedIds: [] });
  });

  it('sends changed and newly reachable entries, and the ids that went out of reach', () => {
    const graph = registry();
    graph.apply(
      changes(5, [
        { put: entry('own', 'spiffe://td/own', A.spiffeId, ['unix:uid:2'], 6) },
        // The child moves under agent B: it and its unchanged grandchild leave A.
        { put: entry('child', 'spiffe://td/child', B.spiffeId, ['unix:uid:1'], 7) },
        { del: 'viaAlias' },
        // A new alias makes an existing, unchanged entry reachable.
        { put: entry('alias2', 'spiffe://td/cluster/two', SERVER, ['x:y'], 9) },
      ]),
    );
    const delta = graph.deltaSince(A, 5);
    expect(delta).toMatchObject({ full: false, revision: 9, deletedIds: ['child', 'grandchild', 'viaAlias'] });
    expect(ids(delta.entries)).toEqual(['alias2', 'orphan', 'own']);
    expect(graph.deltaSince(B, 5)).toMatchObject({ full: false, deletedIds: [] });
    expect(ids(graph.deltaSince(B, 5).entries)).toEqual(['child', 'grandchild']);
    expect(graph.deltaSince(A, 9)).toEqual({ full: false, revision: 9, entries: [], deletedIds: [] });
  });

  it('rolls back through several batches to the asked revision', () => {
    const graph = registry();
    graph.apply(changes(5, [{ put: entry('n1', 'spiffe://td/n1', A.spiffeId, undefined, 6) }]));
    graph.apply(changes(6, [{ del: 'n1' }, { put: entry('n2', 'spiffe://td/n2', A.spiffeId, undefined, 8) }]));
    expect(graph.deltaSince(A, 6)).toMatchObject({ full: false, deletedIds: ['n1'] });
    expect(ids(graph.deltaSince(A, 6).entries)).toEqual(['n2']);
    expect(graph.deltaSince(A, 5)).toMatchObject({ full: false, deletedIds: [] });
    expect(ids(graph.deltaSince(A, 5).entries)).toEqual(['n2']);
  });

  it('answers in full when an entry changed on both sides of the revision inside one batch', () => {
    const graph = registry();
    graph.apply(changes(5, [{ put: entry('n1', 'spiffe://td/n1', A.spiffeId, undefined, 6) }, { del: 'n1' }]));
    expect(graph.deltaSince(A, 6).full).toBe(true);
    expect(graph.deltaSince(A, 5)).toEqual({ full: false, revision: 7, entries: [], deletedIds: [] });
  });

  it('answers in full from a revision older than the retained log', () => {
    const graph = new EntryGraph(SERVER, 1);
    graph.load({ revision: 0, entries: byId([]) });
    graph.apply(changes(0, [{ put: entry('e1', 'spiffe://td/e1', A.spiffeId) }]));
    graph.apply(changes(1, [{ put: entry('e2', 'spiffe://td/e2', A.spiffeId) }]));
    graph.apply(changes(2, [{ put: entry('e3', 'spiffe://td/e3', A.spiffeId) }]));
    expect(graph.deltaSince(A, 1).full).toBe(true);
    expect(ids(graph.deltaSince(A, 2).entries)).toEqual(['e3']);
  });

  it('refuses a snapshot whose map holds an entry under another id, and keeps what it had', () => {
    const graph = registry();
    const own = entry('own2', 'spiffe://td/own2', A.spiffeId);
    expect(() => graph.load({ revision: 9, entries: new Map([['other', own]]) })).toThrow(
      'entry graph: snapshot holds entry own2 under other',
    );
    expect(graph.revision).toBe(5);
    expect(ids(graph.authorised(A))).toEqual(['alias', 'child', 'grandchild', 'own', 'viaAlias']);
  });

  it('refuses changes that do not start at its revision', () => {
    expect(() => registry().apply(changes(3, []))).toThrow('entry graph: changes start at 3, the graph is at 5');
  });
});

describe('EntryGraph.isAdmin', () => {
  const NOW = new Date('2026-06-01T00:00:00Z');
  const admin = (id: string, spiffeId: string, expiresAt: Date | null = null): Entry => ({
    ...entry(id, spiffeId, A.spiffeId),
    admin: true,
    expiresAt,
  });

  it('holds for a SPIFFE ID with an unexpired admin entry, follows updates and deletes, and ignores expired ones', () => {
    const graph = new EntryGraph(SERVER);
    graph.load({
      revision: 1,
      entries: byId([
        admin('ops', 'spiffe://td/ops'),
        entry('web', 'spiffe://td/web', A.spiffeId),
        admin('old', 'spiffe://td/old', new Date(NOW.getTime() - 1)),
        admin('soon', 'spiffe://td/soon', new Date(NOW.getTime() + 1000)),
      ]),
    });
    expect(graph.isAdmin('spiffe://td/ops', NOW)).toBe(true);
    expect(graph.isAdmin('spiffe://td/web', NOW)).toBe(false);
    expect(graph.isAdmin('spiffe://td/old', NOW)).toBe(false);
    expect(graph.isAdmin('spiffe://td/soon', NOW)).toBe(true);
    expect(graph.isAdmin('spiffe://td/soon', new Date(NOW.getTime() + 1000))).toBe(false);
    expect(graph.isAdmin('spiffe://td/nobody', NOW)).toBe(false);

    // A second admin entry for the same ID keeps it admin while the first loses the flag, not after.
    graph.apply(
      changes(1, [{ put: admin('ops-2', 'spiffe://td/ops') }, { put: entry('ops', 'spiffe://td/ops', A.spiffeId) }]),
    );
    expect(graph.isAdmin('spiffe://td/ops', NOW)).toBe(true);
    graph.apply(changes(3, [{ del: 'ops-2' }, { put: admin('web', 'spiffe://td/web') }]));
    expect(graph.isAdmin('spiffe://td/ops', NOW)).toBe(false);
    expect(graph.isAdmin('spiffe://td/web', NOW)).toBe(true);
    // An entry moved to another SPIFFE ID takes its admin flag along.
    graph.apply(changes(5, [{ put: admin('web', 'spiffe://td/web-2') }]));
    expect(graph.isAdmin('spiffe://td/web', NOW)).toBe(false);
    expect(graph.isAdmin('spiffe://td/web-2', NOW)).toBe(true);
    graph.load({ revision: 9, entries: byId([]) });
    expect(graph.isAdmin('spiffe://td/web-2', NOW)).toBe(false);
  });
});

describe('EntryGraph.isDownstream', () => {
  const NOW = new Date('2026-06-01T00:00:00Z');
  const downstream = (id: string, spiffeId: string, expiresAt: Date | null = null): Entry => ({
    ...entry(id, spiffeId, A.spiffeId),
    downstream: true,
    expiresAt,
  });

  it('holds for a SPIFFE ID with an unexpired downstream entry, follows updates and deletes, apart from admin', () => {
    const graph = new EntryGraph(SERVER);
    graph.load({
      revision: 1,
      entries: byId([
        downstream('nested', 'spiffe://td/nested'),
        downstream('old', 'spiffe://td/old', new Date(NOW.getTime() - 1)),
        { ...entry('ops', 'spiffe://td/ops', A.spiffeId), admin: true },
      ]),
    });
    expect(graph.isDownstream('spiffe://td/nested', NOW)).toBe(true);
    expect(graph.isDownstream('spiffe://td/old', NOW)).toBe(false);
    expect(graph.isDownstream('spiffe://td/ops', NOW)).toBe(false);
    expect(graph.isAdmin('spiffe://td/nested', NOW)).toBe(false);

    graph.apply(changes(1, [{ put: entry('nested', 'spiffe://td/nested', A.spiffeId) }]));
    expect(graph.isDownstream('spiffe://td/nested', NOW)).toBe(false);
    graph.apply(changes(2, [{ put: downstream('nested', 'spiffe://td/nested') }, { del: 'nested' }]));
    expect(graph.isDownstream('spiffe://td/nested', NOW)).toBe(false);
  });
});
