/**
 * The Node client library as a user gets it: `npm pack` of `@sigil/spiffe` and `@sigil/workload-api`, installed with
 * `npm install` into a scratch project under the OS temp dir (outside the monorepo, so nothing resolves from its
 * node_modules), and the compiled examples copied there and run against a real `sigil-server` and `sigil-agent`:
 * the mTLS pair, the JWT pair, the Fastify recipe and the gRPC pair (grpc-js channel credentials and the Connect
 * transport against an HTTP/2 server armed by `attachMtls`). Needs `npm run build` first.
 *
 * The install runs with `--prefer-offline`: the dependencies come from npm's cache, filled by the monorepo's `npm ci`.
 * When npm cannot install them (no cache, no network), every test is skipped with npm's reason in its title.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { X509Source } from '@sigil/workload-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ROOT,
  type ServerProcess,
  type SigilProcess,
  agentReady,
  closeTestDatabase,
  requireBuild,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';

const TD = 'spiffe://example.org';
const SERVER_ID = `${TD}/server`;
const CLIENT_ID = `${TD}/client`;
const UID = process.getuid!();

interface Run {
  code: number;
  output: string;
}

function exec(file: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((done) => {
    execFile(file, args, { cwd, env: { ...process.env, ...env }, timeout: 180_000 }, (error, stdout, stderr) =>
      done({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, output: stdout + stderr }),
    );
  });
}

/** The version of `name` the monorepo installed, so the scratch install finds it in npm's cache. */
async function installedVersion(name: string): Promise<string> {
  return (JSON.parse(await readFile(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string })
    .version;
}

/** Packs both libraries and installs them into a new scratch project; the reason when npm cannot. */
async function prepareScratch(): Promise<{ scratch: string; skip?: string }> {
  const scratch = await mkdtemp(join(tmpdir(), 'sigil-client-package-'));
  const packs = join(scratch, 'packs');
  await mkdir(packs);
  const packed = await exec(
    'npm',
    ['pack', '--json', '--pack-destination', packs, '--workspace', 'libs/spiffe', '--workspace', 'libs/workload-api'],
    ROOT,
  );
  if (packed.code !== 0) throw new Error(`npm pack failed:\n${packed.output}`);
  const project = join(scratch, 'project');
  await mkdir(project);
  await writeFile(
    join(project, 'package.json'),
    JSON.stringify({ name: 'sigil-client-scratch', private: true, type: 'module' }),
  );
  const tarballs = (await readdir(packs)).filter((file) => file.endsWith('.tgz')).map((file) => join(packs, file));
  const extras = [
    `@grpc/grpc-js@${await installedVersion('@grpc/grpc-js')}`,
    `fastify@${await installedVersion('fastify')}`,
  ];
  const installed = await exec(
    'npm',
    ['install', '--prefer-offline', '--no-audit', '--no-fund', ...tarballs, ...extras],
    project,
  );
  if (installed.code !== 0) {
    const reason = installed.output.match(/npm error (?:code )?(E[A-Z]+.*)/)?.[1] ?? 'npm install failed';
    return { scratch, skip: `npm could not install the packed library and its dependencies here: ${reason}` };
  }
  await cp(join(ROOT, 'dist/examples'), join(project, 'examples'), {
    recursive: true,
    filter: (source) => !source.endsWith('.tsbuildinfo') && !source.endsWith('.map'),
  });
  return { scratch };
}

requireBuild();
const prepared = await prepareScratch();
const PROJECT = join(prepared.scratch, 'project');

describe(
  prepared.skip === undefined
    ? 'the packed client library, installed outside the monorepo, runs the examples against a real server and agent'
    : `the packed client library (skipped: ${prepared.skip})`,
  { timeout: 90_000 },
  () => {
    if (prepared.skip !== undefined) {
      it.skip(`runs the examples (skipped: ${prepared.skip})`, () => undefined);
      return;
    }

    let server: ServerProcess;
    let agent: SigilProcess;
    let address: string;
    const children: ChildProcess[] = [];

    /** Starts an example in the scratch project; resolves with the port it printed. */
    async function startExample(script: string, args: readonly string[], listening: RegExp) {
      const child = spawn(process.execPath, [join('examples', script), ...args], {
        cwd: PROJECT,
        env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: address, NODE_PATH: '' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
      const deadline = Date.now() + 60_000;
      for (;;) {
        const match = output.match(listening);
        if (match !== null) return { port: match[1]!, output: () => output };
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${script} did not start:\n${output}`);
        await new Promise((done) => setTimeout(done, 50));
      }
    }

    const runExample = (script: string, args: readonly string[]): Promise<Run> =>
      exec(process.execPath, [join('examples', script), ...args], PROJECT, {
        SPIFFE_ENDPOINT_SOCKET: address,
        NODE_PATH: '',
      });

    /** Starts a server example as SERVER_ID that accepts only CLIENT_ID. */
    const startServerExample = (script: string, listening: RegExp) =>
      startExample(script, ['--spiffe-id', SERVER_ID, '--authorize', CLIENT_ID, '--port', '0'], listening);

    /** Calls an HTTPS example at `url` with mtls-client.js as `caller`, accepting only SERVER_ID. */
    const callAs = (caller: string, url: string): Promise<Run> =>
      runExample('mtls-client.js', ['--spiffe-id', caller, '--authorize', SERVER_ID, '--url', url]);

    beforeAll(async () => {
      server = await startServerProcess({ dir: join(prepared.scratch, 'server') });
      const bundle = join(prepared.scratch, 'bundle.pem');
      await server.writeBundle(bundle);
      const token = await server.joinToken(`${TD}/host`);
      for (const id of [SERVER_ID, CLIENT_ID]) {
        await server.json([
          'entry',
          'create',
          '--spiffe-id',
          id,
          '--parent-id',
          `${TD}/host`,
          '--selector',
          `unix:uid:${UID}`,
        ]);
      }
      const socketPath = join(prepared.scratch, 'agent', 'api.sock');
      await mkdir(join(prepared.scratch, 'agent'));
      agent = startAgentProcess({
        servers: [server.port],
        socketPath,
        dataDir: join(prepared.scratch, 'agent', 'data'),
        trustBundle: bundle,
        joinToken: token,
      });
      await agentReady(agent);
      address = `unix://${socketPath}`;
      const source = await X509Source.create({ clientOptions: { address }, timeoutMs: 60_000 });
      const deadline = Date.now() + 30_000;
      while (source.getX509Svids().length < 2 && Date.now() < deadline) {
        await new Promise((done) => setTimeout(done, 50));
      }
      await source.close();
    }, 180_000);

    afterAll(async () => {
      for (const child of children.reverse()) {
        if (child.exitCode !== null || child.signalCode !== null) continue;
        const exited = once(child, 'exit');
        child.kill('SIGKILL');
        await exited;
      }
      await agent?.stop('SIGKILL');
      await server?.process.stop();
      await closeTestDatabase();
      await rm(prepared.scratch, { recursive: true, force: true });
    });

    it('resolves @sigil/* from the scratch project, not from the monorepo', async () => {
      expect(relative(ROOT, PROJECT).startsWith('..')).toBe(true);
      const resolved = await exec(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          "for (const name of ['@sigil/spiffe', '@sigil/workload-api', '@sigil/workload-api/grpc-js']) console.log(import.meta.resolve(name));",
        ],
        PROJECT,
      );
      expect(resolved.code).toBe(0);
      const paths = resolved.output.trim().split('\n');
      expect(paths).toHaveLength(3);
      for (const path of paths) expect(path).toMatch(new RegExp(`^file://${PROJECT}/node_modules/@sigil/`));
    });

    it('the verification helpers and bundle loading from the package: verifyX509Svid, parseAndValidateJwtSvid', async () => {
      const script = `
        import { WorkloadApiClient, loadX509Bundle, parseAndValidateJwtSvid, verifyX509Svid } from '@sigil/workload-api';
        const client = new WorkloadApiClient();
        const { svids } = await client.fetchX509Context();
        const svid = svids.find((candidate) => candidate.spiffeId.toString() === '${CLIENT_ID}');
        const verified = await verifyX509Svid(svid.certificates, await loadX509Bundle('example.org', process.env.BUNDLE));
        console.log('x509 ' + verified.spiffeId + ' chain ' + verified.verifiedChain.length);
        const jwt = await client.fetchJwtSvid({ audience: '${TD}/api', spiffeId: '${CLIENT_ID}' });
        const bundles = await client.fetchJwtBundles();
        console.log('jwt ' + (await parseAndValidateJwtSvid(jwt.token, bundles, '${TD}/api')).spiffeId);
        await parseAndValidateJwtSvid(jwt.token, bundles, '${TD}/other').then(
          () => console.log('accepted the wrong audience'),
          (error) => console.log('refused ' + error.code),
        );
        await client.close();
      `;
      const result = await exec(process.execPath, ['--input-type=module', '-e', script], PROJECT, {
        SPIFFE_ENDPOINT_SOCKET: address,
        BUNDLE: join(prepared.scratch, 'bundle.pem'),
      });
      expect(result.output).toMatch(new RegExp(`^x509 ${CLIENT_ID} chain [2-9]$`, 'm'));
      expect(result.output).toContain(`jwt ${CLIENT_ID}`);
      expect(result.output).toContain('refused ERR_JWT_SVID_INVALID');
      expect(result.code).toBe(0);
    });

    it('the mTLS pair: both sides authenticated, a client the server does not authorize refused', async () => {
      const https = await startServerExample('mtls-server.js', /listening on https:\/\/127\.0\.0\.1:(\d+)\//);
      const url = `https://127.0.0.1:${https.port}/`;
      const ok = await callAs(CLIENT_ID, url);
      expect(ok.output).toMatch(
        new RegExp(`^200 from server certificate [0-9A-F]+: hello ${CLIENT_ID}, this is ${SERVER_ID}$`, 'm'),
      );
      expect(ok.code).toBe(0);

      const refused = await callAs(SERVER_ID, url);
      expect(refused.code).toBe(1);
      expect(refused.output).not.toContain('200 from');
    });

    it('the JWT pair: a JWT-SVID from the agent, validated offline against the JWT bundle', async () => {
      const audience = `${TD}/jwt-server`;
      const jwt = await startExample(
        'jwt-server.js',
        ['--audience', audience, '--port', '0'],
        /on http:\/\/127\.0\.0\.1:(\d+)\//,
      );
      const url = `http://127.0.0.1:${jwt.port}/`;
      const ok = await runExample('jwt-client.js', ['--audience', audience, '--spiffe-id', CLIENT_ID, '--url', url]);
      expect(ok.output).toMatch(new RegExp(`^200: hello ${CLIENT_ID}, your token expires at \\S+$`, 'm'));
      expect(ok.code).toBe(0);

      const wrongAudience = await runExample('jwt-client.js', ['--audience', `${TD}/elsewhere`, '--url', url]);
      expect(wrongAudience.output).toMatch(/^401: /m);
    });

    it('one-way TLS: the JWT pair over HTTPS, the server presenting its SVID, the client verifying it with a bundle file', async () => {
      const audience = `${TD}/jwt-server`;
      const jwt = await startExample(
        'jwt-server.js',
        ['--audience', audience, '--port', '0', '--https', 'svid', '--spiffe-id', SERVER_ID],
        /on https:\/\/127\.0\.0\.1:(\d+)\//,
      );
      const bundle = join(prepared.scratch, 'bundle.pem');
      const call = (authorize: string) =>
        runExample('jwt-client.js', [
          ...['--audience', audience, '--spiffe-id', CLIENT_ID, '--url', `https://127.0.0.1:${jwt.port}/`],
          ...['--authorize', authorize, '--bundle', bundle],
        ]);
      const ok = await call(SERVER_ID);
      expect(ok.output).toMatch(new RegExp(`^200: hello ${CLIENT_ID}, your token expires at \\S+$`, 'm'));
      expect(ok.code).toBe(0);

      const refused = await call(CLIENT_ID);
      expect(refused.output).toContain(`failed: peer ${SERVER_ID} is not authorized`);
      expect(refused.code).toBe(1);
    });

    it('the Fastify recipe: createMtlsServer as serverFactory', async () => {
      const fastify = await startServerExample('fastify-server.js', /listening on https:\/\/127\.0\.0\.1:(\d+)/);
      const url = `https://127.0.0.1:${fastify.port}/`;
      const ok = await callAs(CLIENT_ID, url);
      expect(ok.output).toMatch(
        new RegExp(`^200 from server certificate [0-9A-F]+: hello ${CLIENT_ID} from fastify$`, 'm'),
      );
      expect(ok.code).toBe(0);

      const refused = await callAs(SERVER_ID, url);
      expect(refused.code).toBe(1);
      expect(fastify.output()).toContain(`refused a connection: peer ${SERVER_ID} is not authorized`);
    });

    it('the gRPC pair: grpc-js channel credentials and the Connect transport against an attachMtls server', async () => {
      const grpc = await startServerExample('grpc-server.js', /serving gRPC on 127\.0\.0\.1:(\d+)/);
      const target = `127.0.0.1:${grpc.port}`;
      const ok = await runExample('grpc-client.js', [
        '--spiffe-id',
        CLIENT_ID,
        '--authorize',
        SERVER_ID,
        '--target',
        target,
        '--name',
        'x',
      ]);
      expect(ok.output).toContain(`grpc-js: hello ${CLIENT_ID}`);
      expect(ok.output).toContain(`connect: hello ${CLIENT_ID}`);
      expect(ok.code).toBe(0);

      // The client's authorizer refuses the server: the call fails before any request is sent.
      const refused = await runExample('grpc-client.js', [
        '--spiffe-id',
        CLIENT_ID,
        '--authorize',
        CLIENT_ID,
        '--target',
        target,
      ]);
      expect(refused.code).toBe(1);
      expect(refused.output).toContain(`peer ${SERVER_ID} is not authorized`);
    });
  },
);
