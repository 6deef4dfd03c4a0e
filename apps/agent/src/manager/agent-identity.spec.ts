import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpiffeId, type TrustBundle, TrustDomain } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCa } from '../../../../test/support/test-ca.js';
import { AgentIdentity } from './agent-identity.js';

const td = TrustDomain.parse('example.org');
let oldCa: TestCa;
let newCa: TestCa;
let dir: string;

const ders = (bundle: TrustBundle): string[] =>
  bundle.x509AuthoritiesDer().map((der) => Buffer.from(der).toString('hex'));
const trusted = (identity: AgentIdentity): string[] => {
  const trust = identity.attestationTrust();
  return trust.kind === 'bundle' ? ders(trust.bundle) : [];
};

beforeAll(async () => {
  oldCa = await TestCa.create('example.org');
  newCa = await TestCa.create('example.org');
  dir = await mkdtemp(join(tmpdir(), 'sigil-agent-identity-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('AgentIdentity.attestationTrust', () => {
  it('trusts the stored bundle and the configured trust bundle together, the same object while neither changes', () => {
    const identity = new AgentIdentity({ kind: 'bundle', file: 'unused', bundle: newCa.bundle() }, td);
    expect(trusted(identity)).toEqual(ders(newCa.bundle()));
    identity.useStoredBundle(oldCa.bundle());
    expect(trusted(identity).sort()).toEqual([...ders(oldCa.bundle()), ...ders(newCa.bundle())].sort());
    expect(identity.attestationTrust()).toBe(identity.attestationTrust());
  });

  it('ends insecure bootstrap for good once a bundle is stored', () => {
    const identity = new AgentIdentity({ kind: 'insecure' }, td);
    expect(identity.attestationTrust()).toEqual({ kind: 'insecure', trustDomain: td });
    identity.useStoredBundle(oldCa.bundle());
    expect(identity.attestationTrust().kind).toBe('bundle');
    expect(trusted(identity)).toEqual(ders(oldCa.bundle()));
    expect(identity.holdsBundle()).toBe(true);
  });

  it('ignores a stored bundle of another trust domain', async () => {
    const other = await TestCa.create('other.org');
    const identity = new AgentIdentity({ kind: 'insecure' }, td);
    identity.useStoredBundle(other.bundle());
    expect(identity.attestationTrust().kind).toBe('insecure');
  });

  it('reads the trust bundle file again, keeping its last copy when the file cannot be read', async () => {
    const file = join(dir, 'bundle.pem');
    await writeFile(file, oldCa.certificate.toString('pem'));
    const identity = new AgentIdentity({ kind: 'bundle', file, bundle: oldCa.bundle() }, td);
    const before = identity.attestationTrust();
    expect(await identity.reloadTrustBundle()).toBeUndefined();
    expect(identity.attestationTrust()).toBe(before);
    await writeFile(file, newCa.certificate.toString('pem'));
    expect(await identity.reloadTrustBundle()).toBeUndefined();
    expect(trusted(identity)).toEqual(ders(newCa.bundle()));
    await writeFile(file, 'not a bundle');
    expect(await identity.reloadTrustBundle()).toMatch(
      /^\S+bundle\.pem is neither PEM CA certificates nor a SPIFFE bundle/,
    );
    expect(trusted(identity)).toEqual(ders(newCa.bundle()));
  });
});

describe('AgentIdentity.attestationCredentials', () => {
  it('is the agent SVID while it is valid, and nothing before the first attestation or once it expired', async () => {
    const identity = new AgentIdentity({ kind: 'insecure' }, td);
    const now = new Date();
    expect(identity.attestationCredentials(now)).toBeUndefined();
    const svid = await oldCa.createX509Svid('spiffe://example.org/sigil/agent/x509pop/node');
    const notBefore = new Date(now.getTime() - 60_000);
    const expiresAt = new Date(now.getTime() + 60_000);
    identity.install({
      state: {
        svidChain: svid.chainDer(),
        privateKeyPkcs8: await svid.privateKeyPkcs8(),
        bundle: oldCa.bundle(),
        attestationMethod: 'x509pop',
      },
      spiffeId: SpiffeId.parse('spiffe://example.org/sigil/agent/x509pop/node'),
      notBefore,
      expiresAt,
      receivedAt: now,
    });
    expect(identity.attestationCredentials(now)).toBe(identity.credentials());
    expect(identity.attestationCredentials(now)?.certificateChainPem).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(identity.attestationCredentials(expiresAt)).toBeUndefined();
    expect(identity.attestationCredentials(new Date(notBefore.getTime() - 1))).toBeUndefined();
  });
});
