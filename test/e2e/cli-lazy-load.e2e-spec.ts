/**
 * The client commands start quickly because they never load the server framework: each command line runs the REAL
 * built binary under test/support/module-trace.mjs, which records every module the process loads, and the packages
 * behind those modules are checked. Only `run` (and the agent's `validate`, which shares run's options) may load
 * NestJS, TypeORM and the database drivers. `api fetch` against a live Workload API (the agent's real server and
 * handler, test/support/fake-workload-api.ts) verifies and prints SVIDs without @peculiar/x509 (~0.4 s to load) and
 * X.509 without jose; both load on first use only (libs/spiffe/src/lazy-modules.ts). It talks gRPC with
 * `@sigil/workload-api/client` (node:http2 and @bufbuild/protobuf's wire reader), without Connect or protobuf-es's
 * registry and the generated schemas. Not timed: bench/cli-startup.bench.ts measures the time.
 *
 * `sigil-agent` runs the agent's bundle (dist/agent, scripts/bundle-agent.mjs): a chunk of it that the process loads
 * counts as every compiled module the bundle's metafile says the chunk holds (esbuild puts two modules in one chunk
 * only when the same entry points and `import()`s reach both, so this is what the process evaluates, or more).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeWorkloadApi } from '../support/fake-workload-api.js';
import { AGENT_BIN, ROOT, SERVER_BIN, requireBuild } from '../support/sigil-processes.js';

const TRACE_HOOK = join(ROOT, 'test/support/module-trace.mjs');

/** What only `sigil-server run` and `sigil-agent run` need: a client command that loads one of them is slow. */
const FRAMEWORK = [
  '@nestjs/core',
  '@nestjs/common',
  '@nestjs/platform-fastify',
  '@nestjs/swagger',
  '@nestjs/typeorm',
  'fastify',
  'typeorm',
  'pg',
  '@electric-sql/pglite',
  '@electric-sql/pglite-socket',
  'prom-client',
  'koffi',
];

/** @peculiar/x509 and what it brings: loaded on first use of a parsed certificate object only. */
const X509_OBJECTS = ['@peculiar/x509', 'reflect-metadata', 'tsyringe', '@peculiar/asn1-schema'];

/** Connect's transports: the root `@sigil/workload-api` entry point's, not the Workload API client's (~100 ms). */
const CONNECT = ['@connectrpc/connect', '@connectrpc/connect-node'];

/** `@sigil/workload-api`'s root entry point, client, sources and TLS helpers: not the agent's (it serves the API). */
const WORKLOAD_API_CLIENT_SIDE = /(?:^|\/)libs\/workload-api\/dist\/(?:index|client|x509-source|jwt-source|tls)\.js$/;

/**
 * Modules of @bufbuild/protobuf that only its root entry point (registry, JSON, every codec) and the generated
 * schemas (codegenv2 builds their descriptors at load) bring, ~100 ms together; the client needs only `wire`.
 */
const PROTOBUF_REGISTRY = /\/@bufbuild\/protobuf\/dist\/esm\/(?:index\.js|registry\.js|codegenv\d\/)/;

let scratch: string;
let runs = 0;

/** esbuild's metafile of the agent's bundle: each output (path from ROOT) with the inputs it holds and imports. */
interface BundleMeta {
  outputs: Record<
    string,
    {
      entryPoint?: string;
      inputs: Record<string, { bytesInOutput: number }>;
      imports: Array<{ path: string; kind: string }>;
    }
  >;
}

const readBundleMeta = (): BundleMeta =>
  JSON.parse(readFileSync(join(ROOT, 'dist/agent/meta.json'), 'utf8')) as BundleMeta;

/** The compiled modules (paths from ROOT) an output of the bundle runs: one with 0 bytes in it was tree-shaken. */
const modulesRunBy = (meta: BundleMeta, output: string): string[] =>
  Object.entries(meta.outputs[output]!.inputs)
    .filter(([, { bytesInOutput }]) => bytesInOutput > 0)
    .map(([input]) => input);

/** The absolute paths of the compiled modules each chunk of the agent's bundle runs, by the chunk's path. */
function bundleChunks(meta: BundleMeta): Map<string, string[]> {
  const chunks = new Map<string, string[]>();
  for (const output of Object.keys(meta.outputs)) {
    if (output.endsWith('.js'))
      chunks.set(
        join(ROOT, output),
        modulesRunBy(meta, output).map((input) => join(ROOT, input)),
      );
  }
  return chunks;
}

/** The trace's modules, each chunk of the agent's bundle replaced by the modules it holds. */
function unbundled(modules: readonly string[]): string[] {
  const chunks = bundleChunks(readBundleMeta());
  return modules.flatMap((line) => chunks.get(line.replace(/^file:\/\//, '')) ?? [line]);
}

/** Runs `node --import module-trace <bin> args…`; the packages (by name) behind every module it loaded. */
async function packagesLoaded(
  bin: string,
  args: readonly string[],
): Promise<{ packages: Set<string>; modules: string[]; code: number; stdout: string }> {
  const traceFile = join(scratch, `trace-${++runs}.txt`);
  const { code, stdout } = await new Promise<{ code: number; stdout: string }>((done) =>
    execFile(
      process.execPath,
      ['--import', TRACE_HOOK, bin, ...args],
      {
        cwd: ROOT,
        env: { ...process.env, SIGIL_MODULE_TRACE: traceFile, DATABASE_URL: '', SPIFFE_ENDPOINT_SOCKET: '' },
        timeout: 60_000,
      },
      (error, out) => done({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout: out }),
    ),
  );
  const packages = new Set<string>();
  const modules = unbundled((await readFile(traceFile, 'utf8')).split('\n').map((line) => decodeURIComponent(line)));
  for (const line of modules) {
    const match = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(line);
    if (match) packages.add(match[1]!);
  }
  return { packages, modules, code, stdout };
}

describe('client commands do not load the server framework', () => {
  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-lazy-'));
  });
  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  const nowhere = (): string => join(scratch, 'absent.sock');

  const cases: Array<{ title: string; bin: string; args: () => string[]; needs: string[]; forbids?: string[] }> = [
    { title: 'sigil-server --help', bin: SERVER_BIN, args: () => ['--help'], needs: ['commander'] },
    { title: 'sigil-server entry --help', bin: SERVER_BIN, args: () => ['entry', '--help'], needs: ['commander'] },
    {
      title: 'sigil-server entry show',
      bin: SERVER_BIN,
      args: () => ['entry', 'show', '--admin-socket', nowhere()],
      needs: ['commander'],
    },
    {
      title: 'sigil-server token generate',
      bin: SERVER_BIN,
      args: () => ['token', 'generate', '--spiffe-id', 'spiffe://example.org/node', '--admin-socket', nowhere()],
      needs: ['commander'],
    },
    {
      title: 'sigil-server agent list',
      bin: SERVER_BIN,
      args: () => ['agent', 'list', '--admin-socket', nowhere()],
      needs: ['commander'],
    },
    {
      title: 'sigil-server federation list',
      bin: SERVER_BIN,
      args: () => ['federation', 'list', '--admin-socket', nowhere()],
      needs: ['commander'],
    },
    {
      title: 'sigil-server healthcheck',
      bin: SERVER_BIN,
      args: () => ['healthcheck', '--admin-socket', nowhere()],
      needs: ['commander'],
    },
    {
      title: 'sigil-server localauthority x509 show',
      bin: SERVER_BIN,
      args: () => ['localauthority', 'x509', 'show', '--admin-socket', nowhere()],
      needs: ['commander'],
    },
    {
      title: 'sigil-server x509 mint',
      bin: SERVER_BIN,
      args: () => ['x509', 'mint', '--spiffe-id', 'spiffe://example.org/w', '--admin-socket', nowhere()],
      needs: ['commander'],
    },
    { title: 'sigil-agent --help', bin: AGENT_BIN, args: () => ['--help'], needs: ['commander'] },
    {
      title: 'sigil-agent logger get',
      bin: AGENT_BIN,
      args: () => ['logger', 'get', '--admin-socket', nowhere()],
      needs: ['commander'],
    },
    {
      title: 'sigil-agent api fetch x509',
      bin: AGENT_BIN,
      args: () => ['api', 'fetch', 'x509', '--socket-path', nowhere()],
      // What it does need is loaded (and seen by the trace): the Workload API client with protobuf's wire codec; not
      // the config validation (~0.3 s to load), which only --write's file helpers' lib brings, lazily; not
      // @peculiar/x509 nor jose; not Connect.
      needs: ['commander', '@bufbuild/protobuf'],
      forbids: ['class-validator', 'jose', ...X509_OBJECTS, ...CONNECT],
    },
    {
      title: 'sigil-agent healthcheck',
      bin: AGENT_BIN,
      args: () => ['healthcheck', '--socket-path', nowhere()],
      needs: ['commander', '@bufbuild/protobuf'],
      forbids: CONNECT,
    },
  ];

  it.each(cases)('$title', async ({ bin, args, needs, forbids = [] }) => {
    const { packages, modules } = await packagesLoaded(bin, args());
    for (const name of needs) expect(packages, `${name} is loaded`).toContain(name);
    expect([...FRAMEWORK, ...forbids].filter((name) => packages.has(name))).toEqual([]);
    expect(modules.filter((module) => PROTOBUF_REGISTRY.test(module))).toEqual([]);
  });

  describe('against a live Workload API', () => {
    let api: FakeWorkloadApi;
    beforeAll(async () => {
      api = await FakeWorkloadApi.start('example.org', ['/web']);
    });
    afterAll(async () => {
      await api?.dispose();
    });

    it('api fetch x509 verifies and prints the SVID without @peculiar/x509, jose, Connect, protobuf-es registry or the config validation', async () => {
      for (const output of ['pretty', 'json']) {
        const run = await packagesLoaded(AGENT_BIN, [
          'api',
          'fetch',
          'x509',
          '--output',
          output,
          '--socket-path',
          api.socketPath,
        ]);
        expect(run.code).toBe(0);
        expect(run.stdout).toContain('spiffe://example.org/web');
        expect(run.packages).toContain('@bufbuild/protobuf');
        expect(
          ['class-validator', 'jose', ...X509_OBJECTS, ...CONNECT].filter((name) => run.packages.has(name)),
        ).toEqual([]);
        expect(run.modules.filter((module) => PROTOBUF_REGISTRY.test(module))).toEqual([]);
      }
    });

    it('the trace sees what loads on first use: jose for api fetch jwt, class-validator for --write (no @peculiar/x509)', async () => {
      const jwt = await packagesLoaded(AGENT_BIN, [
        'api',
        'fetch',
        'jwt',
        '--audience',
        'a',
        '--socket-path',
        api.socketPath,
      ]);
      expect(jwt.code).toBe(0);
      expect(jwt.packages).toContain('jose');
      expect(X509_OBJECTS.filter((name) => jwt.packages.has(name))).toEqual([]);
      const write = await packagesLoaded(AGENT_BIN, [
        'api',
        'fetch',
        'x509',
        '--silent',
        '--write',
        join(scratch, 'written'),
        '--socket-path',
        api.socketPath,
      ]);
      expect(write.code).toBe(0);
      // @sigil/runtime's index (loaded by --write for its atomic writes) brings its config validation; @sigil/pki's
      // PEM helpers no longer bring @peculiar/x509 (it loads where a certificate object is built, 950515d).
      expect(write.packages).toContain('class-validator');
      expect(X509_OBJECTS.filter((name) => write.packages.has(name))).toEqual([]);
    });
  });

  it('sigil-agent run loads no Nest: the agent module graph (dist/apps/agent/agent.js) has no @nestjs package', async () => {
    // Issue 13: @nestjs/common (for a logger) cost the idle agent ~30 MiB of RSS; the agent logs through ContextLogger.
    const agent = await packagesLoaded(join(ROOT, 'dist/apps/agent/agent.js'), []);
    expect(agent.code).toBe(0);
    // The trace sees the packages the agent does load (the handlers' ConnectError and ServiceImpl), and connect-node's
    // server adapter is no longer one of them: the agent serves gRPC with its own router (GrpcRouter).
    expect(agent.packages).toContain('@connectrpc/connect');
    expect(agent.packages).not.toContain('@connectrpc/connect-node');
    expect([...agent.packages].filter((name) => name.startsWith('@nestjs/'))).toEqual([]);
    // Loaded where used (bench/README.md, "The idle agent, module by module"): prom-client only with
    // --metrics-address (observability.e2e-spec.ts scrapes it), and of @sigil/workload-api only the service and its
    // schemas (`@sigil/workload-api/service`), not the client, sources and TLS helpers of the root entry point.
    expect(agent.packages).not.toContain('prom-client');
    expect(agent.modules.filter((line) => line.includes('/libs/workload-api/dist/gen/workload_pb.js'))).not.toEqual([]);
    expect(agent.modules.filter((line) => WORKLOAD_API_CLIENT_SIDE.test(line))).toEqual([]);
  });

  it("sigil-agent's bundle keeps that graph: run loads no prom-client (only the metrics' import() does) and no Workload API client", () => {
    const meta = readBundleMeta();
    const chunkOf = (source: string): string => {
      const found = Object.entries(meta.outputs).find(([, output]) => output.entryPoint === source);
      expect(found, `${source} is a chunk of its own, loaded by import()`).toBeDefined();
      return found![0];
    };
    /** The outputs `start` loads, statically or by import(), never entering `skip`. */
    const reached = (start: string, skip: readonly string[] = []): string[] => {
      const seen = new Set<string>();
      const next = [start];
      for (let output = next.pop(); output !== undefined; output = next.pop()) {
        if (seen.has(output) || skip.includes(output)) continue;
        seen.add(output);
        for (const { path } of meta.outputs[output]?.imports ?? []) if (path in meta.outputs) next.push(path);
      }
      return [...seen];
    };
    const modulesOf = (outputs: readonly string[]): string[] => outputs.flatMap((output) => modulesRunBy(meta, output));
    const metrics = chunkOf('dist/apps/agent/endpoints/observability/agent-metrics.js');
    const otherCommands = ['api', 'healthcheck', 'validate', 'logger'].map((name) =>
      chunkOf(`dist/apps/agent/cli/${name}.command.js`),
    );
    // What `sigil-agent run` can load without --metrics-address: everything main.js reaches, but the other commands
    // and the metrics.
    const run = reached('dist/agent/main.js', [metrics, ...otherCommands]);
    expect(run).toContain(chunkOf('dist/apps/agent/agent.js'));
    const modules = modulesOf(run);
    expect(modules.filter((module) => module.startsWith('node_modules/@connectrpc/connect/'))).not.toEqual([]);
    expect(modules.filter((module) => module.startsWith('node_modules/@connectrpc/connect-node/'))).toEqual([]);
    expect(modules).toContain('libs/workload-api/dist/gen/workload_pb.js');
    expect(modules.filter((module) => module.startsWith('node_modules/prom-client/'))).toEqual([]);
    expect(modules.filter((module) => WORKLOAD_API_CLIENT_SIDE.test(module))).toEqual([]);
    // prom-client is what the metrics' import() brings.
    expect(modulesOf(reached(metrics)).filter((module) => module.startsWith('node_modules/prom-client/'))).not.toEqual(
      [],
    );
  });

  it('the trace sees the framework where it is loaded: sigil-server run (until its database refuses)', async () => {
    const run = await packagesLoaded(SERVER_BIN, [
      'run',
      '--data-dir',
      join(scratch, 'server'),
      '--admin-socket',
      join(scratch, 'admin', 'api.sock'),
      '--bind-address',
      '127.0.0.1',
      '--port',
      '0',
      '--database-url',
      'postgres://postgres@127.0.0.1:1/absent',
    ]);
    expect(run.code).not.toBe(0);
    for (const name of ['@nestjs/core', '@nestjs/platform-fastify', '@nestjs/swagger', 'typeorm', 'pg']) {
      expect(run.packages, `${name} is loaded by run`).toContain(name);
    }
  });
});
