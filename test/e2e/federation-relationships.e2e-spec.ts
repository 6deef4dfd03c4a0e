/**
 * `sigil-server federation create|update|delete|list|show` (flags and SPIRE's `--data`) against a real server: the initial bundle of an
 * https_spiffe relationship stored as `bundle set` stores it, text and `--output json`, refusals with the reason.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCa } from '../support/test-ca.js';
import { type ServerProcess, closeTestDatabase, requireBuild, startServerProcess } from '../support/sigil-processes.js';

describe('sigil-server federation (real server)', () => {
  let scratch: string;
  let server: ServerProcess;

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-federation-cli-'));
    server = await startServerProcess({ dir: join(scratch, 'server') });
  }, 120_000);

  afterAll(async () => {
    await server?.process.stop('SIGKILL');
    await closeTestDatabase();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('creates with an initial bundle, shows, lists, updates, deletes; refuses with the reason', async () => {
    const foreign = await TestCa.create('other.org');
    await writeFile(
      join(scratch, 'relationships.json'),
      JSON.stringify({
        federation_relationships: [
          { trust_domain: 'web.org', bundle_endpoint_url: 'https://bundles.web.org/', https_web: {} },
        ],
      }),
    );
    const bundleFile = join(scratch, 'other.pem');
    await writeFile(bundleFile, foreign.bundle().x509Pem());
    const created = await server.cli([
      'federation',
      'create',
      '--trust-domain',
      'other.org',
      '--bundle-endpoint-url',
      'https://127.0.0.1:8443',
      '--bundle-endpoint-profile',
      'https_spiffe',
      '--endpoint-spiffe-id',
      'spiffe://other.org/sigil/server',
      '--trust-domain-bundle-path',
      bundleFile,
    ]);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    expect(created.stdout).toContain('Bundle endpoint URL       : https://127.0.0.1:8443/');
    // The initial bundle is the trust domain's stored bundle.
    const bundle = await server.cli(['bundle', 'list', '--id', 'other.org']);
    expect(bundle.stdout.trim()).toBe(foreign.bundle().x509Pem().trim());

    const shown = await server.json<Record<string, string>>(['federation', 'show', '--id', 'spiffe://other.org']);
    expect(shown).toMatchObject({
      trust_domain: 'other.org',
      bundle_endpoint_url: 'https://127.0.0.1:8443/',
      bundle_endpoint_profile: 'https_spiffe',
      endpoint_spiffe_id: 'spiffe://other.org/sigil/server',
    });
    const again = await server.cli([
      'federation',
      'create',
      '--trust-domain',
      'other.org',
      '--bundle-endpoint-url',
      'https://127.0.0.1:8443',
      '--bundle-endpoint-profile',
      'https_web',
    ]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('already has a federation relationship');
    const noId = await server.cli([
      'federation',
      'create',
      '--trust-domain',
      'third.org',
      '--bundle-endpoint-url',
      'https://third.example',
      '--bundle-endpoint-profile',
      'https_spiffe',
    ]);
    expect(noId.code).not.toBe(0);
    expect(noId.stderr).toContain('endpoint_spiffe_id: required by the https_spiffe profile');

    // --data (SPIRE's JSON) replaces the flags; without either, the first missing flag is named.
    const both = await server.cli(['federation', 'create', '--data', '-', '--trust-domain', 'x.org'], '{}');
    expect(both.code).not.toBe(0);
    expect(both.stderr).toContain('--data: cannot be combined with --trust-domain');
    const neither = await server.cli(['federation', 'create']);
    expect(neither.code).not.toBe(0);
    expect(neither.stderr).toContain('--trust-domain: required (or --data)');
    const twoProfiles = await server.cli(
      ['federation', 'create', '--data', '-'],
      JSON.stringify({
        federation_relationships: [
          { trust_domain: 'x.org', bundle_endpoint_url: 'https://x.org', https_web: {}, https_spiffe: {} },
        ],
      }),
    );
    expect(twoProfiles.code).not.toBe(0);
    expect(twoProfiles.stderr).toContain('federation_relationships[0]: must hold exactly one profile');
    const web = await server.json<{ relationships: { trust_domain: string }[] }>([
      'federation',
      'create',
      '--data',
      join(scratch, 'relationships.json'),
    ]);
    expect(web.relationships.map((r) => r.trust_domain)).toEqual(['web.org']);
    expect((await server.cli(['federation', 'delete', '--id', 'web.org'])).code).toBe(0);

    const updated = await server.json<Record<string, string>>([
      'federation',
      'update',
      '--trust-domain',
      'other.org',
      '--bundle-endpoint-url',
      'https://bundles.other.org/bundle',
      '--bundle-endpoint-profile',
      'https_web',
    ]);
    expect(updated).toMatchObject({
      bundle_endpoint_url: 'https://bundles.other.org/bundle',
      bundle_endpoint_profile: 'https_web',
    });
    expect(updated['endpoint_spiffe_id']).toBeUndefined();
    const listed = await server.json<{ relationships: { trust_domain: string }[] }>(['federation', 'list']);
    expect(listed.relationships.map((r) => r.trust_domain)).toEqual(['other.org']);
    expect((await server.cli(['federation', 'list'])).stdout).toContain('Found 1 federation relationship');

    expect((await server.cli(['federation', 'delete', '--id', 'other.org'])).stdout).toContain('deleted');
    expect((await server.cli(['federation', 'list'])).stdout.trim()).toBe('No federation relationships found');
    const gone = await server.cli(['federation', 'show', '--id', 'other.org']);
    expect(gone.code).not.toBe(0);
    expect(gone.stderr).toContain('no federation relationship for trust domain other.org');
  }, 120_000);
});
