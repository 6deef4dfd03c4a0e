import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { K8S_PSAT_TOKEN_MAX_LENGTH } from '@sigil/agent-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeAttestor } from '../node-attestors.js';
import { K8S_PSAT_DEFAULT_TOKEN_PATH, k8sPsatAttestor } from './k8s-psat.attestor.js';

const noChallenge = async (): Promise<never> => {
  throw new Error('k8s_psat asks no challenge');
};

describe('k8s_psat agent attestor', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-agent-psat-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('sends the cluster and the token, read again at every attestation (projected tokens rotate)', async () => {
    const tokenPath = join(dir, 'token');
    await writeFile(tokenPath, 'eyJhbGciOiJSUzI1NiJ9.first.sig');
    const attestor = createNodeAttestor({ type: 'k8s_psat', options: { cluster: 'prod', token_path: tokenPath } });
    expect([attestor.type, attestor.route, attestor.singleUse]).toEqual(['k8s_psat', 'k8s-psat', undefined]);
    expect(await attestor.evidence(noChallenge)).toEqual({ cluster: 'prod', token: 'eyJhbGciOiJSUzI1NiJ9.first.sig' });
    // The kubelet replaced the file; a hand-written file may end with a newline.
    await writeFile(tokenPath, 'eyJhbGciOiJSUzI1NiJ9.second.sig\n');
    expect(await attestor.evidence(noChallenge)).toEqual({ cluster: 'prod', token: 'eyJhbGciOiJSUzI1NiJ9.second.sig' });
  });

  it(`reads ${K8S_PSAT_DEFAULT_TOKEN_PATH} when token_path is not set`, async () => {
    const attestor = k8sPsatAttestor({ cluster: 'prod' });
    await expect(attestor.evidence(noChallenge)).rejects.toThrow(
      `k8s_psat token ${K8S_PSAT_DEFAULT_TOKEN_PATH}: cannot be read (ENOENT)`,
    );
  });

  it('refuses an empty or oversized token file, naming the file and never its content', async () => {
    const empty = join(dir, 'empty');
    await writeFile(empty, '\n');
    await expect(k8sPsatAttestor({ cluster: 'prod', token_path: empty }).evidence(noChallenge)).rejects.toThrow(
      `k8s_psat token ${empty}: is empty`,
    );
    const huge = join(dir, 'huge');
    await writeFile(huge, 'S'.repeat(K8S_PSAT_TOKEN_MAX_LENGTH + 1));
    const error = await k8sPsatAttestor({ cluster: 'prod', token_path: huge })
      .evidence(noChallenge)
      .catch((caught: unknown) => caught as Error);
    expect((error as Error).message).toBe(
      `k8s_psat token ${huge}: larger than ${K8S_PSAT_TOKEN_MAX_LENGTH} bytes, not a projected token`,
    );
    expect((error as Error).message).not.toContain('SSSS');
  });

  it.each<[string, Record<string, string>, string]>([
    ['no cluster', { token_path: '/t' }, 'k8s_psat attestor: option cluster is required'],
    [
      'a cluster that is no path segment',
      { cluster: 'prod/eu' },
      `k8s_psat attestor: option cluster: must be letters, digits, '.', '_' or '-' (a SPIFFE ID path segment), got "prod/eu"`,
    ],
    [
      'an unknown option',
      { cluster: 'prod', audience: 'x' },
      'node attestor k8s_psat: unknown option "audience" (known: cluster, token_path)',
    ],
  ])('refuses %s', (_name, options, message) => {
    expect(() => k8sPsatAttestor(options)).toThrow(message);
  });
});
