/**
 * The SPIRE-parity commands of the real `sigil-agent` binary: `api fetch` defaulting to x509 with `--silent`,
 * `api fetch jwt --audience a,b` split as SPIRE does, `validate`, and usage errors as `Error: …` lines (JSON with
 * `--output json`). The Workload API it calls is the agent's real server and handler on a real socket, in front of
 * an in-memory identity cache (test/support/fake-workload-api.ts).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeWorkloadApi } from '../support/fake-workload-api.js';
import { AGENT_BIN, requireBuild, runBin } from '../support/sigil-processes.js';

describe('sigil-agent SPIRE-parity commands (real binary)', { timeout: 60_000 }, () => {
  let api: FakeWorkloadApi;
  let dir: string;
  const agent = (args: readonly string[]) => runBin(AGENT_BIN, [...args, '--socket-path', api.socketPath]);

  beforeAll(async () => {
    requireBuild();
    api = await FakeWorkloadApi.start('example.org', ['/web']);
    dir = await mkdtemp(join(tmpdir(), 'sigil-agent-cli-'));
  });

  afterAll(async () => {
    await api?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('api fetch without a subcommand fetches X509-SVIDs, as SPIRE', async () => {
    const text = await agent(['api', 'fetch']);
    expect(text).toMatchObject({ code: 0, stderr: '' });
    expect(text.stdout).toMatch(/^Received 1 svid\n\nSPIFFE ID\s+: spiffe:\/\/example\.org\/web$/m);
    const json = await agent(['api', 'fetch', '--output', 'json']);
    expect((JSON.parse(json.stdout) as { svids: { spiffe_id: string }[] }).svids[0]!.spiffe_id).toBe(
      'spiffe://example.org/web',
    );
  });

  it('--silent prints nothing and still writes the files', async () => {
    const out = join(dir, 'svids');
    const silent = await agent(['api', 'fetch', 'x509', '--silent', '--write', out]);
    expect(silent).toEqual({ code: 0, stdout: '', stderr: '' });
    expect((await readdir(out)).sort()).toEqual(['bundle.0.pem', 'svid.0.key', 'svid.0.pem']);
    expect(await agent(['api', 'fetch', '--silent'])).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('api fetch jwt --audience a,b asks for both audiences (repeatable too)', async () => {
    const result = await agent(['api', 'fetch', 'jwt', '--audience', 'a,b', '--audience', 'c', '--output', 'json']);
    expect(result.code).toBe(0);
    const [svid] = (JSON.parse(result.stdout) as { svids: { svid: string }[] }).svids;
    expect(decodeJwt(svid!.svid).aud).toEqual(['a', 'b', 'c']);
    const empty = await agent(['api', 'fetch', 'jwt', '--audience', 'a,,b']);
    expect(empty).toMatchObject({
      code: 1,
      stderr:
        "Error: option '--audience <a,b>' argument 'a,,b' is invalid. each audience: must not be empty or blank (in 'a,,b')\n",
    });
  });

  it('reports usage errors as one Error: line, or as JSON with --output json', async () => {
    expect(await agent(['api', 'fetch', 'x509', '--bogus'])).toMatchObject({
      code: 1,
      stdout: '',
      stderr: "Error: unknown option '--bogus'\n",
    });
    const json = await agent(['api', 'fetch', 'jwt', '--output', 'json']);
    expect(JSON.parse(json.stderr)).toEqual({
      error: 'invalid_argument',
      message: "required option '--audience <a,b>' not specified",
    });
  });

  it('validates a configuration without starting, naming every bad key', async () => {
    const dataDir = join(dir, 'data');
    const bundle = join(dir, 'bundle.pem');
    await writeFile(bundle, api.cache.agentBundles!.own.x509Pem());
    const good = await runBin(AGENT_BIN, [
      'validate',
      '--server-address',
      '127.0.0.1:8081',
      '--join-token',
      'x'.repeat(43),
      '--trust-bundle',
      bundle,
      '--data-dir',
      dataDir,
    ]);
    expect(good).toMatchObject({ code: 0, stdout: 'Agent configuration is valid.\n' });
    expect(existsSync(dataDir)).toBe(false);
    const notBundle = await runBin(AGENT_BIN, [
      'validate',
      '--server-address',
      'h:1',
      '--trust-bundle',
      '/etc/hostname',
    ]);
    expect(notBundle.stderr).toMatch(/^Error: invalid agent configuration: --trust-bundle: \/etc\/hostname is neither/);
    const bad = await runBin(AGENT_BIN, ['validate', '--server-address', 'no-port', '--output', 'json']);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stderr)).toMatchObject({
      error: 'invalid_argument',
      message: expect.stringContaining('--server-address'),
    });
  });
});
