/**
 * kill -9 of a real server in the middle of a 5,000-entry batch create through the admin API (issue 12, item 3): after
 * a restart every entry of the batch is either there with its own revision or not there (chunks of WRITE_CHUNK commit
 * whole), the revisions have no gap and no repeat, and sending the same batch again creates exactly the missing ones,
 * reporting the others as already existing: no duplicate. On this run's database (PostgreSQL when DATABASE_URL is
 * set, else the embedded one, which the kill takes down with the server process).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { WRITE_CHUNK } from '../../apps/server/src/entries/entries.service.js';
import { type ServerProcess, closeTestDatabase, requireBuild, startServerProcess } from '../support/sigil-processes.js';
import { unixJsonRequest } from '../support/unix-http.js';

const TD = 'spiffe://example.org';
const TOTAL = 5000;
/** The admin API's batch limit. */
const PER_REQUEST = 500;
/** Longest wait for the first chunks to be written before the kill. */
const WAIT_FOR_CHUNKS_MS = 180_000;

/** How a batch that ended early ended, in one line, for a failure message that names the cause. */
const howItEnded = (error: unknown): string =>
  error === undefined
    ? 'every request answered 200'
    : String(error instanceof Error ? error.message : error).split('\n')[0]!;

interface EntryView {
  id: string;
  spiffe_id: string;
  revision_number: number;
}
interface BatchAnswer {
  results: { status: { code: string; message: string }; entry?: EntryView }[];
}

const batch = Array.from({ length: TOTAL }, (_, i) => ({
  spiffe_id: `${TD}/batch/${i}`,
  parent_id: `${TD}/node`,
  selectors: [{ type: 'unix', value: `uid:${10_000 + i}` }],
}));

describe('kill -9 of the server mid batch create (real server process)', () => {
  let scratch: string;
  let server: ServerProcess;

  /**
   * One batch request. A 503 (the server's pool or PostgreSQL out of connections: the whole suite shares one
   * PostgreSQL, and the server says to ask again) is asked again a few times after a second; anything else fails.
   */
  const post = async (entries: typeof batch): Promise<BatchAnswer> => {
    for (let attempt = 1; ; attempt++) {
      const answer = await unixJsonRequest(server.adminSocket, 'POST', '/v1/entries', JSON.stringify({ entries }));
      if (answer.status === 200) return answer.body as unknown as BatchAnswer;
      const why = `batch create: ${answer.status} ${JSON.stringify(answer.body)}`;
      if (answer.status !== 503 || attempt === 5) throw new Error(why);
      console.error(`${why}; asked again in 1 s`);
      await sleep(1_000);
    }
  };
  /** Sends the whole batch as the CLI does, one request of PER_REQUEST after the other. */
  const sendAll = async (): Promise<BatchAnswer['results']> => {
    const results: BatchAnswer['results'] = [];
    for (let start = 0; start < TOTAL; start += PER_REQUEST) {
      results.push(...(await post(batch.slice(start, start + PER_REQUEST))).results);
    }
    return results;
  };
  const count = async (): Promise<number> => {
    const answer = await unixJsonRequest(server.adminSocket, 'GET', '/v1/entries/count');
    if (answer.status !== 200 || typeof answer.body.count !== 'number') {
      throw new Error(`entry count: ${answer.status} ${JSON.stringify(answer.body)}`);
    }
    return answer.body.count;
  };
  const allEntries = async (): Promise<EntryView[]> => {
    const entries: EntryView[] = [];
    let token: string | undefined;
    do {
      const query = `page_size=1000${token ? `&page_token=${encodeURIComponent(token)}` : ''}`;
      const answer = await unixJsonRequest(server.adminSocket, 'GET', `/v1/entries?${query}`);
      if (answer.status !== 200) throw new Error(`entry list: ${answer.status} ${JSON.stringify(answer.body)}`);
      entries.push(...(answer.body.entries as EntryView[]));
      if (entries.length > TOTAL) throw new Error(`entry list: more than the ${TOTAL} entries ever sent`);
      token = answer.body.next_page_token as string | undefined;
    } while (token);
    return entries;
  };
  /** Each entry once, each with its own revision, the revisions one run without a gap. */
  const expectWholeAndGapFree = (entries: EntryView[]): void => {
    expect(new Set(entries.map((entry) => entry.spiffe_id)).size).toBe(entries.length);
    const revisions = entries.map((entry) => entry.revision_number).sort((a, b) => a - b);
    expect(new Set(revisions).size).toBe(revisions.length);
    expect(revisions.every((revision) => Number.isInteger(revision) && revision > 0)).toBe(true);
    expect(revisions.at(-1)! - revisions[0]!).toBe(revisions.length - 1);
  };

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-kill-batch-'));
    server = await startServerProcess({ dir: scratch });
  }, 120_000);

  afterAll(async () => {
    await server?.process.stop('SIGKILL');
    await closeTestDatabase();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('leaves whole chunks only, and a retried batch creates the rest without duplicates', async () => {
    // The server's own account goes with a failure: the run's log then says what the server saw.
    onTestFailed(() =>
      console.error(`sigil-server output (last 8,000 characters):\n${server.process.output().slice(-8_000)}`),
    );
    let ended: { error: unknown } | undefined;
    const sending = sendAll().then(
      () => (ended = { error: undefined }),
      (error: unknown) => (ended = { error }),
    );
    // Killed once some chunks are written and the batch is not done: mid request, as far as timing allows. A batch
    // that ends (or fails) first, or a count that never gets there, fails here with what happened, never hangs.
    const deadline = Date.now() + WAIT_FOR_CHUNKS_MS;
    let lastCount: number | string = 'no count yet';
    while (typeof lastCount !== 'number' || lastCount < 1_100) {
      if (ended !== undefined) {
        throw new Error(`the batch ended before 1,100 entries were written: ${howItEnded(ended.error)}`);
      }
      if (Date.now() > deadline) throw new Error(`after ${WAIT_FOR_CHUNKS_MS} ms the count is: ${lastCount}`);
      lastCount = await count().catch((error: unknown) => howItEnded(error));
      await sleep(10);
    }
    await server.process.stop('SIGKILL');
    await sending;
    expect(ended?.error).toBeInstanceOf(Error);

    server = await server.restart();
    const survived = await allEntries();
    expect(survived.length).toBeGreaterThanOrEqual(1_100);
    expect(survived.length).toBeLessThan(TOTAL);
    // A chunk commits whole or not at all.
    expect(survived.length % WRITE_CHUNK).toBe(0);
    expectWholeAndGapFree(survived);
    const survivedIds = new Set(survived.map((entry) => entry.spiffe_id));
    // The batch is written in order: what survived is a prefix of it.
    expect([...survivedIds].sort()).toEqual(
      batch
        .slice(0, survived.length)
        .map((entry) => entry.spiffe_id)
        .sort(),
    );

    const retried = await sendAll();
    const codes = retried.map(
      (result, i) => (survivedIds.has(batch[i]!.spiffe_id) ? 'existed' : 'new') + ':' + result.status.code,
    );
    expect(codes.filter((code) => code === 'existed:already_exists')).toHaveLength(survived.length);
    expect(codes.filter((code) => code === 'new:ok')).toHaveLength(TOTAL - survived.length);
    // An existing one is reported with the entry already there, unchanged.
    const survivedById = new Map(survived.map((entry) => [entry.id, entry]));
    for (const [i, result] of retried.entries()) {
      if (!survivedIds.has(batch[i]!.spiffe_id)) continue;
      expect(survivedById.get(result.entry!.id)).toMatchObject({
        spiffe_id: batch[i]!.spiffe_id,
        revision_number: result.entry!.revision_number,
      });
    }

    const final = await allEntries();
    expect(final).toHaveLength(TOTAL);
    expectWholeAndGapFree(final);
    expect(await count()).toBe(TOTAL);
  }, 600_000);
});
