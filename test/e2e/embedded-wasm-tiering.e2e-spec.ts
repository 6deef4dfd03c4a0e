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
import { requireBuild, startServerProcess } from '../support/sigil-processes.js';

const TRACE = '--trace-wasm-compilation-times';
const OPTIMIZED = /using TurboFan/g;
const BASELINE = /using Liftoff/g;
/** How long each server runs on after the work, so that tier-up compiles still under way are traced too. */
const SETTLE_MS = 5_000;

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

/**
 * Starts an embedded server with V8's compile trace and `nodeArgs`, has it write and read the registry (the queries
 * its embedded PostgreSQL runs), lets it run on for {@link SETTLE_MS}, stops it and returns how many functions each
 * compiler compiled (from its whole stdout, read to the end).
 */
async function compiledFunctions(
  name: string,
  nodeArgs: readonly string[],
): Promise<{ baseline: number; optimized: number }> {
  const server = await startServerProcess({
    dir: join(dir, name),
    database: 'embedded',
    nodeArgs: [TRACE, ...nodeArgs],
  });
  try {
    const created = await server.cli(['entry', 'create', '--data', join(dir, 'entries.json')]);
    expect(created.code, created.stderr).toBe(0);
    for (let round = 0; round < 5; round++) {
      const shown = await server.json<{ entries: unknown[] }>(['entry', 'show']);
      expect(shown.entries.length).toBeGreaterThan(0);
    }
    await new Promise((done) => setTimeout(done, SETTLE_MS));
  } finally {
    await server.process.stop();
    await server.process.closed;
  }
  const trace = server.process.stdout();
  return { baseline: trace.match(BASELINE)?.length ?? 0, optimized: trace.match(OPTIMIZED)?.length ?? 0 };
}

describe('the embedded database on V8', () => {
  it('runs PGlite on the baseline compiler only, unless the operator chose how WebAssembly tiers up', async () => {
    const untiered = await compiledFunctions('default', []);
    // The trace is on (PGlite's functions compiled by Liftoff are listed), and none was optimized.
    expect(untiered.baseline).toBeGreaterThan(1000);
    expect(untiered.optimized).toBe(0);

    // The operator's `--wasm-dynamic-tiering` (V8's default) is kept: the same work tiers functions up, which is also
    // what shows that this trace would list optimized functions.
    const chosen = await compiledFunctions('chosen', ['--wasm-dynamic-tiering']);
    expect(chosen.baseline).toBeGreaterThan(1000);
    expect(chosen.optimized).toBeGreaterThan(0);
  }, 180_000);
});
