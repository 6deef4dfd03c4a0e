/**
 * The embedded database's WebAssembly is never tiered up to V8's optimizing compiler (EMBEDDED_WASM_FLAGS in
 * apps/server/src/database/embedded-postgres.ts): on Node 24 optimizing one of PGlite's functions took a 604 MB
 * compile zone. V8's own trace (`--trace-wasm-compilation-times`, one line per function compiled and by which
 * compiler) shows what a real embedded server compiles while it serves a batch of entries; an operator who chose the
 * tiering (a node option) keeps the choice, which is also what shows that this trace sees optimized compiles at all.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireBuild, startServerProcess, type ServerProcess } from '../support/sigil-processes.js';

const TRACE = '--trace-wasm-compilation-times';
const OPTIMIZED = /^Compiled function \S+ using TurboFan/gm;
const BASELINE = /^Compiled function \S+ using Liftoff/gm;

let dir: string;

beforeAll(async () => {
  requireBuild();
  dir = await mkdtemp(join(tmpdir(), 'sigil-wasm-tiering-'));
  await Promise.all(['default', 'chosen'].map((name) => mkdir(join(dir, name))));
  const entries = Array.from({ length: 300 }, (_, i) => ({
    spiffe_id: `spiffe://example.org/w/${i}`,
    parent_id: 'spiffe://example.org/sigil/agent/join_token/host-a',
    selectors: [{ type: 'unix', value: `uid:${1000 + i}` }],
  }));
  await writeFile(join(dir, 'entries.json'), JSON.stringify({ entries }));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes and reads the registry through the server: the queries its embedded PostgreSQL runs. */
async function serveEntries(server: ServerProcess): Promise<void> {
  const created = await server.cli(['entry', 'create', '--data', join(dir, 'entries.json')]);
  expect(created.code, created.stderr).toBe(0);
  for (let round = 0; round < 5; round++) {
    const shown = await server.json<{ entries: unknown[] }>(['entry', 'show']);
    expect(shown.entries.length).toBeGreaterThan(0);
  }
}

describe('the embedded database on V8', () => {
  it('runs PGlite on the baseline compiler only, unless the operator chose how WebAssembly tiers up', async () => {
    const server = await startServerProcess({ dir: join(dir, 'default'), database: 'embedded', nodeArgs: [TRACE] });
    let untiered: string;
    try {
      await serveEntries(server);
    } finally {
      await server.process.stop();
      untiered = server.process.output();
    }
    // The trace is on (PGlite's functions compiled by Liftoff are listed), and none was optimized.
    expect(untiered.match(BASELINE)?.length ?? 0).toBeGreaterThan(1000);
    expect(untiered.match(OPTIMIZED) ?? []).toEqual([]);

    // The operator's `--wasm-dynamic-tiering` (V8's default) is kept: the same work tiers functions up.
    const chosen = await startServerProcess({
      dir: join(dir, 'chosen'),
      database: 'embedded',
      nodeArgs: [TRACE, '--wasm-dynamic-tiering'],
    });
    try {
      await serveEntries(chosen);
      await chosen.process.waitFor(OPTIMIZED, { timeoutMs: 60_000 });
    } finally {
      await chosen.process.stop();
    }
  });
});
