/**
 * A PostgreSQL outage with real server and agent processes (issue 12, item 2), on a private PostgreSQL the test
 * crashes with `pg_ctl stop -m immediate` and starts again. Through the outage the server serves what it holds in
 * memory (the bundle, entry syncs, X.509- and JWT-SVID signing for the agents and entries it knows, past the status
 * cache's time to live), refuses writes with 503 and reports not-ready; when PostgreSQL is back it reconnects by
 * itself and nothing was lost. The agent serves its cached SVIDs throughout.
 *
 * The outage lasts SIGIL_E2E_OUTAGE_SECONDS (default 12 s: past the 2 s status cache TTL set here, which is what the
 * outage rule is about); `SIGIL_E2E_OUTAGE_SECONDS=60` runs the 60 s.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TrustBundle, TrustDomain, parseAndValidateJwtSvid } from '@sigil/spiffe';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  PRIVATE_POSTGRES_MISSING,
  type PrivatePostgres,
  privatePostgresSkipTitle,
  startPrivatePostgres,
} from '../support/private-postgres.js';
import {
  type ServerProcess,
  type SigilProcess,
  agentReady,
  requireBuild,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';
import { unixJsonRequest } from '../support/unix-http.js';
import {
  type WorkloadClient,
  firstMessage,
  idsOf,
  securityHeader,
  splitChain,
  unary,
  verifySvidMessage,
  workloadClient,
  type X509SvidResponse,
} from '../support/workload-grpc.js';

const TD = 'spiffe://example.org';
const UID = process.getuid!();
const OUTAGE_MS = Number(process.env.SIGIL_E2E_OUTAGE_SECONDS ?? 12) * 1000;
const STATUS_TTL_SECONDS = 2;

interface EntryView {
  id: string;
  spiffe_id: string;
  revision_number: number;
}

describe.skipIf(PRIVATE_POSTGRES_MISSING !== undefined)(
  `database outage of ${OUTAGE_MS / 1000} s (real server and agent, private PostgreSQL)${privatePostgresSkipTitle()}`,
  () => {
    let scratch: string;
    let postgres: PrivatePostgres;
    let server: ServerProcess;
    let agent: SigilProcess;
    let client: WorkloadClient;
    const children: SigilProcess[] = [];
    const api = () => request.agent(`https://127.0.0.1:${server.port}`).disableTLSCerts();

    const startAgent = (joinToken?: string): SigilProcess => {
      const started = startAgentProcess({
        servers: [server.port],
        socketPath: join(scratch, 'agent', 'api.sock'),
        dataDir: join(scratch, 'agent', 'data'),
        trustBundle: join(scratch, 'bundle.pem'),
        joinToken,
      });
      children.push(started);
      return started;
    };
    const fetchX509 = (): Promise<X509SvidResponse> => firstMessage(client.FetchX509SVID({}, securityHeader()));
    const leafSerials = (response: X509SvidResponse): string[] =>
      response.svids.map((svid) => new X509Certificate(splitChain(svid.x509_svid)[0]!).serialNumber).sort();
    const entries = async (): Promise<EntryView[]> =>
      (await server.json<{ entries: EntryView[] }>(['entry', 'show'])).entries
        .map(({ id, spiffe_id, revision_number }) => ({ id, spiffe_id, revision_number }))
        .sort((a, b) => a.id.localeCompare(b.id));
    const createEntry = (path: string) =>
      server.cli([
        'entry',
        'create',
        '--spiffe-id',
        `${TD}/${path}`,
        '--parent-id',
        `${TD}/node`,
        '--selector',
        `unix:uid:${UID}`,
      ]);
    const validateJwt = async (audience: string): Promise<string> => {
      const fetched = await unary(client.FetchJWTSVID.bind(client), { audience: [audience] });
      const jwks = await firstMessage(client.FetchJWTBundles({}, securityHeader()));
      const bundle = TrustBundle.parseJwks(TrustDomain.parse(TD), Buffer.from(jwks.bundles[TD]!).toString('utf8'));
      return (await parseAndValidateJwtSvid(fetched.svids[0]!.svid, bundle, audience)).spiffeId.toString();
    };

    beforeAll(async () => {
      requireBuild();
      scratch = await mkdtemp(join(tmpdir(), 'sigil-db-outage-'));
      postgres = await startPrivatePostgres();
      server = await startServerProcess({
        dir: join(scratch, 'server'),
        database: { url: postgres.url },
        flags: ['--agent-status-cache-ttl', `${STATUS_TTL_SECONDS}s`],
      });
      children.push(server.process);
      await server.writeBundle(join(scratch, 'bundle.pem'));
      const token = await server.joinToken(`${TD}/node`);
      expect((await createEntry('web')).code).toBe(0);
      expect((await createEntry('db')).code).toBe(0);
      await mkdir(join(scratch, 'agent'));
      agent = startAgent(token);
      await agentReady(agent);
      client = workloadClient(join(scratch, 'agent', 'api.sock'));
    }, 180_000);

    afterAll(async () => {
      client?.close();
      for (const child of children.reverse()) await child.stop('SIGKILL');
      await postgres?.close();
      if (scratch) await rm(scratch, { recursive: true, force: true });
    });

    it(
      'serves from memory, refuses writes with 503, is not ready, reconnects by itself and loses nothing',
      async () => {
        const before = {
          entries: await entries(),
          agents: (await server.json<{ agents: { spiffe_id: string }[] }>(['agent', 'list'])).agents.map(
            (each) => each.spiffe_id,
          ),
          sequence: (await api().get('/bundle')).body.spiffe_sequence as number,
          svids: await fetchX509(),
        };
        expect(idsOf(before.svids)).toEqual([`${TD}/db`, `${TD}/web`]);
        expect(before.agents).toHaveLength(1);
        expect((await api().get('/readyz')).status).toBe(200);

        // Measured, not asserted (reported in README's High availability section).
        const figures: Record<string, number> = {};
        const outageStart = Date.now();
        await postgres.stop();

        // Not ready within the readiness cache's second, naming the database.
        for (;;) {
          const ready = await api().get('/readyz');
          if (ready.status === 503) {
            figures.notReadyMs = Date.now() - outageStart;
            expect(ready.body).toMatchObject({ error: 'unavailable' });
            expect(ready.body.message).toMatch(/^not ready: database: unreachable/);
            break;
          }
          await sleep(100);
        }
        // Writes: a clear 503 (the admin API on its socket), and the CLI's error says why.
        const refused = await unixJsonRequest(
          server.adminSocket,
          'POST',
          '/v1/entries',
          JSON.stringify({
            entries: [
              {
                spiffe_id: `${TD}/during`,
                parent_id: `${TD}/node`,
                selectors: [{ type: 'unix', value: `uid:${UID}` }],
              },
            ],
          }),
        );
        expect(refused).toEqual({
          status: 503,
          body: {
            error: 'unavailable',
            message: 'database: unreachable or refusing connections; retry in a few seconds',
          },
        });
        const refusedCli = await createEntry('during');
        expect(refusedCli.code).not.toBe(0);
        expect(refusedCli.stderr).toMatch(/database: unreachable or refusing connections/);
        // The bundle, from memory.
        const bundle = await api().get('/bundle');
        expect(bundle.status).toBe(200);
        expect(bundle.body.spiffe_sequence).toBe(before.sequence);
        // The agent serves what it holds.
        expect(leafSerials(await fetchX509())).toEqual(leafSerials(before.svids));

        // Past the status cache's TTL the server still knows this agent: it signs a JWT-SVID for a new audience...
        await sleep(STATUS_TTL_SECONDS * 1000 + 500);
        expect(await validateJwt('during-outage')).toMatch(new RegExp(`^${TD}/(web|db)$`));
        // ...and a restarted agent (resuming from its data dir) syncs its entries and has their X.509-SVIDs signed.
        const restartedAt = agent.output().length;
        await agent.stop('SIGTERM');
        client.close();
        agent = startAgent();
        await agentReady(agent, 0);
        expect(agent.output().slice(restartedAt)).not.toMatch(/"msg":"node attested"/);
        client = workloadClient(join(scratch, 'agent', 'api.sock'));
        const resigned = await fetchX509();
        expect(idsOf(resigned)).toEqual([`${TD}/db`, `${TD}/web`]);
        for (const svid of resigned.svids) await verifySvidMessage(svid);
        expect(leafSerials(resigned)).not.toEqual(leafSerials(before.svids));

        // Still down: still refused, still not ready.
        expect((await createEntry('during')).code).not.toBe(0);
        expect((await api().get('/readyz')).status).toBe(503);
        const left = OUTAGE_MS - (Date.now() - outageStart);
        if (left > 0) await sleep(left);
        // Throughout: the agent kept serving, the server kept running.
        expect(idsOf(await fetchX509())).toEqual([`${TD}/db`, `${TD}/web`]);
        expect(server.process.running).toBe(true);

        const backAt = Date.now();
        await postgres.start();
        figures.postgresStartMs = Date.now() - backAt;
        for (;;) {
          if ((await api().get('/readyz')).status === 200) break;
          await sleep(200);
        }
        figures.readyAgainMs = Date.now() - backAt;
        // Writes work again, and reach the agent (the change stream is listening again).
        expect((await createEntry('after')).code).toBe(0);
        while (!idsOf(await fetchX509()).includes(`${TD}/after`)) await sleep(200);
        figures.firstWriteReachedAgentMs = Date.now() - backAt;
        // Nothing lost: entries (ids and revisions), the agent, the bundle sequence.
        const after = await entries();
        expect(after.filter((entry) => entry.spiffe_id !== `${TD}/after`)).toEqual(before.entries);
        expect(after.find((entry) => entry.spiffe_id === `${TD}/after`)?.revision_number).toBeGreaterThan(
          Math.max(...before.entries.map((entry) => entry.revision_number)),
        );
        expect(
          (await server.json<{ agents: { spiffe_id: string }[] }>(['agent', 'list'])).agents.map(
            (each) => each.spiffe_id,
          ),
        ).toEqual(before.agents);
        expect((await api().get('/bundle')).body.spiffe_sequence).toBe(before.sequence);
        const final = await fetchX509();
        for (const svid of final.svids) await verifySvidMessage(svid);
        // Failed background work (rotation ticks, audit records of refused requests) is logged, but nothing is fatal.
        expect(server.process.output()).not.toMatch(/"level":60[,}]/);
        console.info(`database outage of ${OUTAGE_MS / 1000} s, figures (ms): ${JSON.stringify(figures)}`);
      },
      OUTAGE_MS + 180_000,
    );
  },
);
