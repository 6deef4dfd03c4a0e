import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpiffeId, TrustBundle, TrustDomain } from '@sigil/spiffe';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TEST_NOW, TestCa, type TestSvid } from '../../../../test/support/test-ca.js';
import {
  type AgentState,
  AgentStorage,
  BUNDLE_FILE,
  KEY_FILE,
  META_FILE,
  SVID_FILE,
  decideResume,
} from './agent-storage.js';
import { DataDirInUseError } from './agent-storage.js';
import { joinTokenDigest } from '../attestor/node/join-token/join-token.attestor.js';
import { ensurePrivateDir, writeFileAtomic } from '@sigil/runtime';

const AGENT_ID = 'spiffe://example.org/sigil/agent/join_token/7';
const td = TrustDomain.parse('example.org');
let ca: TestCa;
let svid: TestSvid;
let dir: string;

async function stateOf(leaf: TestSvid, bundle: TrustBundle = ca.bundle()): Promise<AgentState> {
  return {
    svidChain: leaf.chainDer(),
    privateKeyPkcs8: await leaf.privateKeyPkcs8(),
    bundle,
    attestationMethod: 'join_token',
    usedCredentialSha256: joinTokenDigest('tok'),
  };
}

const mode = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;

beforeAll(async () => {
  ca = await TestCa.create('example.org', { now: TEST_NOW });
  svid = await ca.createX509Svid(AGENT_ID);
});

beforeEach(async () => {
  dir = join(await mkdtemp(join(tmpdir(), 'sigil-agent-storage-')), 'data');
});

afterEach(async () => {
  await rm(join(dir, '..'), { recursive: true, force: true });
});

describe('atomic files', () => {
  it('creates the data dir 0700 and tightens an existing one', async () => {
    await ensurePrivateDir(dir);
    expect(await mode(dir)).toBe(0o700);
    await chmod(dir, 0o755);
    await ensurePrivateDir(dir);
    expect(await mode(dir)).toBe(0o700);
    await writeFile(join(dir, 'file'), '');
    await expect(ensurePrivateDir(join(dir, 'file'))).rejects.toThrow();
  });

  it('replaces a file in one step, mode 0600, leaving no temporary file', async () => {
    await ensurePrivateDir(dir);
    const path = join(dir, 'state');
    await writeFile(path, 'old', { mode: 0o644 });
    await writeFileAtomic(path, 'new');
    expect(await readFile(path, 'utf8')).toBe('new');
    expect(await mode(path)).toBe(0o600);
    expect(await readdir(dir)).toEqual(['state']);
  });

  it('keeps the old file when the write fails', async () => {
    await ensurePrivateDir(dir);
    const path = join(dir, 'state');
    await writeFileAtomic(path, 'old');
    // A directory in the way of the rename: the new content never replaces the old one, and no temp file stays.
    const blocked = join(dir, 'blocked');
    await mkdir(join(blocked, 'inner'), { recursive: true });
    await expect(writeFileAtomic(blocked, 'new')).rejects.toThrow();
    expect(await readFile(path, 'utf8')).toBe('old');
    expect((await readdir(dir)).sort()).toEqual(['blocked', 'state']);
  });
});

describe('AgentStorage', () => {
  it('saves the SVID, key, bundle and facts as 0600 files in a 0700 dir and loads them back', async () => {
    const storage = new AgentStorage(dir);
    const state = await stateOf(svid, TrustBundle.create(td, { x509Authorities: [ca.certificate], sequenceNumber: 4 }));
    await storage.save(state, SpiffeId.parse(AGENT_ID));
    expect(await mode(dir)).toBe(0o700);
    expect((await readdir(dir)).sort()).toEqual([META_FILE, KEY_FILE, SVID_FILE, BUNDLE_FILE].sort());
    for (const name of [META_FILE, KEY_FILE, SVID_FILE, BUNDLE_FILE]) expect(await mode(join(dir, name))).toBe(0o600);
    expect(await readFile(join(dir, KEY_FILE), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    const meta = JSON.parse(await readFile(join(dir, META_FILE), 'utf8'));
    expect(meta).toEqual({
      spiffe_id: AGENT_ID,
      attestation_method: 'join_token',
      join_token_sha256: joinTokenDigest('tok'),
    });
    expect(JSON.stringify(meta)).not.toContain('"tok"');

    const loaded = await storage.load(td);
    expect(loaded?.svidChain).toEqual(state.svidChain);
    expect(loaded?.privateKeyPkcs8).toEqual(state.privateKeyPkcs8);
    expect(loaded?.bundle.sequenceNumber).toBe(4);
    expect(loaded?.attestationMethod).toBe('join_token');
    expect(loaded?.usedCredentialSha256).toBe(joinTokenDigest('tok'));
  });

  it('loads nothing from an empty dir, and names the file that is broken', async () => {
    const storage = new AgentStorage(dir);
    expect(await storage.load(td)).toBeUndefined();
    await storage.save(await stateOf(svid), SpiffeId.parse(AGENT_ID));
    await writeFile(join(dir, BUNDLE_FILE), '{"keys": 3}');
    await expect(storage.load(td)).rejects.toThrow(`${join(dir, BUNDLE_FILE)}: bundle must have a keys array`);
    await rm(join(dir, KEY_FILE));
    await expect(storage.load(td)).rejects.toThrow(
      `${SVID_FILE} exists but ${KEY_FILE}, ${BUNDLE_FILE} or ${META_FILE} is missing`,
    );
  });

  it('forgets the SVID and key but keeps the bundle', async () => {
    const storage = new AgentStorage(dir);
    await storage.save(await stateOf(svid), SpiffeId.parse(AGENT_ID));
    await storage.forgetSvid();
    expect((await readdir(dir)).sort()).toEqual([META_FILE, BUNDLE_FILE].sort());
    expect(await storage.load(td)).toBeUndefined();
  });

  it('AgentStorage.prepare takes the data dir’s lock: a second storage on the same dir is refused until release', async () => {
    const dataDir = join(dir, 'locked');
    const first = new AgentStorage(dataDir);
    await first.prepare();
    await first.prepare(); // the same storage again: it holds the lock already
    const second = new AgentStorage(dataDir);
    const refused = await second.prepare().catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(DataDirInUseError);
    expect((refused as Error).message).toBe(
      `data dir ${dataDir} is in use by another sigil-agent (pid ${process.pid}): one agent per data dir; stop the ` +
        'other one, or give this one its own --data-dir',
    );
    first.release();
    await second.prepare();
    second.release();
  });
});

describe('decideResume', () => {
  const at = (offsetMs: number): Date => new Date(TEST_NOW.getTime() + offsetMs);

  it('resumes with a valid SVID that chains to the stored bundle', async () => {
    const decision = await decideResume(await stateOf(svid), { now: TEST_NOW, trustDomain: td });
    expect(decision).toMatchObject({ resume: true });
    expect(decision.resume && decision.spiffeId.toString()).toBe(AGENT_ID);
    expect(decision.resume && decision.expiresAt).toEqual(svid.certificate.notAfter);
  });

  it('also resumes when no trust domain is configured (insecure bootstrap)', async () => {
    expect(await decideResume(await stateOf(svid), { now: TEST_NOW, trustDomain: undefined })).toMatchObject({
      resume: true,
    });
  });

  it('does not resume without state', async () => {
    expect(await decideResume(undefined, { now: TEST_NOW, trustDomain: td })).toEqual({
      resume: false,
      reason: 'no stored agent SVID',
    });
  });

  it('does not resume with an expired SVID', async () => {
    const decision = await decideResume(await stateOf(svid), { now: at(2 * 3_600_000), trustDomain: td });
    expect(decision).toEqual({
      resume: false,
      reason: `stored agent SVID expired at ${svid.certificate.notAfter.toISOString()}`,
    });
  });

  it('does not resume with an SVID that does not chain to the stored bundle', async () => {
    const other = await TestCa.create('example.org', { now: TEST_NOW });
    const decision = await decideResume(await stateOf(svid, other.bundle()), { now: TEST_NOW, trustDomain: td });
    expect(decision.resume).toBe(false);
    expect(!decision.resume && decision.reason).toMatch(
      /^stored agent SVID does not verify against the stored bundle: certificate chain does not chain to a trusted authority/,
    );
  });

  it('does not resume with a key that is not the SVID key', async () => {
    const another = await ca.createX509Svid(AGENT_ID);
    const state = { ...(await stateOf(svid)), privateKeyPkcs8: await another.privateKeyPkcs8() };
    expect(await decideResume(state, { now: TEST_NOW, trustDomain: td })).toEqual({
      resume: false,
      reason: 'stored agent SVID is unusable: private key does not match the public key of the leaf certificate',
    });
  });

  it('does not resume into another trust domain', async () => {
    expect(
      await decideResume(await stateOf(svid), { now: TEST_NOW, trustDomain: TrustDomain.parse('other.org') }),
    ).toEqual({
      resume: false,
      reason: 'stored agent SVID is of trust domain example.org, not the configured other.org',
    });
  });
});
