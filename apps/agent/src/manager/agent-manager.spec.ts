import { X509Certificate, createHash, randomBytes, verify } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PEM_LABEL, importPublicKeySpki, parseCsrFast, toPem } from '@sigil/pki';
import { SpiffeId, TrustDomain } from '@sigil/spiffe';
import type { AttestationRequestBody } from '@sigil/agent-api';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { TestCa } from '../../../../test/support/test-ca.js';
import { type AgentSvidResponse, type AttestationResponse } from '@sigil/agent-api';
import { AgentApiError } from '../client/server-client.js';
import { ServerUnavailableError } from '../client/tls-transport.js';
import { Backoff } from '../common/backoff.js';
import { type Clock } from '@sigil/runtime';
import { type NodeAttestationConfig } from '../config.js';
import { AgentStorage } from '../storage/agent-storage.js';
import { joinTokenDigest } from '../attestor/node/join-token/join-token.attestor.js';
import { AgentIdentity } from './agent-identity.js';
import {
  AGENT_FATAL_EXIT_CODE,
  AGENT_RESTART_EXIT_CODE,
  AgentFatalError,
  AgentManager,
  type AgentManagerOptions,
  exitCodeOf,
} from './agent-manager.js';
import { chainIssuerIds } from './svid-issuers.js';

const td = TrustDomain.parse('example.org');
const quiet = { log: () => undefined, warn: () => undefined, error: () => undefined };
let ca: TestCa;
let popCa: TestCa;
let dir: string;

/** A stand-in for the server's attestation and renewal routes, signing real agent SVIDs with a TestCa. */
class FakeAttestationServer {
  calls: string[] = [];
  ttlSeconds = 3600;
  unavailableFor = 0;
  refuseAttestation: AgentApiError | undefined;
  refuseRenewal: AgentApiError | undefined;
  /** Whether its x509pop attestor lets an attested agent attest again (else renewal is the way). */
  reattestable = true;
  /** Answers of a busy server (429, 503), one per attestation call, before it serves. */
  busy: number[] = [];
  private nonce: Uint8Array | undefined;
  private chain: Uint8Array[] = [];

  /** The server's routes by attestor, as `ServerClient.attest` and `attestationChallenge` reach them. */
  async attest(route: string, body: AttestationRequestBody): Promise<AttestationResponse> {
    const fields = body as unknown as Record<string, string>;
    if (route === 'join-token') return this.attestJoinToken(fields['token'] as string, body.csr);
    if (route !== 'x509pop') throw new AgentApiError(404, 'not_found', `no attestor ${route}`);
    const signature = new Uint8Array(Buffer.from(fields['signature'] as string, 'base64'));
    return this.attestX509pop(fields['challenge_id'] as string, signature, body.csr);
  }

  async attestationChallenge(route: string, body: object): Promise<unknown> {
    if (route !== 'x509pop') throw new AgentApiError(404, 'not_found', `no challenge for ${route}`);
    const certificates = (body as { certificates: string[] }).certificates;
    const { challengeId, nonce } = await this.x509popChallenge(
      certificates.map((text) => new Uint8Array(Buffer.from(text, 'base64'))),
    );
    return { challenge_id: challengeId, nonce: Buffer.from(nonce).toString('base64') };
  }

  async attestJoinToken(token: string, csrPem: string): Promise<AttestationResponse> {
    this.calls.push(`join_token:${token}`);
    this.maybeUnavailable();
    this.maybeBusy();
    if (this.refuseAttestation) throw this.refuseAttestation;
    return this.issue(
      `/sigil/agent/join_token/${createHash('sha256').update(token).digest('hex').slice(0, 8)}`,
      csrPem,
    );
  }

  async x509popChallenge(certificates: readonly Uint8Array[]): Promise<{ challengeId: string; nonce: Uint8Array }> {
    this.calls.push('x509pop:challenge');
    this.maybeUnavailable();
    this.maybeBusy();
    this.chain = [...certificates];
    this.nonce = new Uint8Array(randomBytes(32));
    return { challengeId: 'c1', nonce: this.nonce };
  }

  async attestX509pop(challengeId: string, signature: Uint8Array, csrPem: string): Promise<AttestationResponse> {
    this.calls.push('x509pop:attest');
    if (this.refuseAttestation) throw this.refuseAttestation;
    const leaf = new X509Certificate(this.chain[0] as Uint8Array);
    if (challengeId !== 'c1' || !verify('sha256', this.nonce as Uint8Array, leaf.publicKey, signature)) {
      throw new AgentApiError(401, 'unauthenticated', 'x509pop signature does not verify');
    }
    return this.issue(`/sigil/agent/x509pop/${leaf.fingerprint.replaceAll(':', '').toLowerCase()}`, csrPem);
  }

  async renew(csrPem: string): Promise<AgentSvidResponse> {
    this.calls.push('renew');
    this.maybeUnavailable();
    if (this.refuseRenewal) throw this.refuseRenewal;
    // As Sigil's server (and SPIRE's) answer an agent whose attestation can attest it again.
    if (this.reattestable && this.lastPath.startsWith('/sigil/agent/x509pop/')) {
      throw new AgentApiError(403, 'permission_denied', 'agent must reattest instead of renew');
    }
    return this.issue(this.lastPath, csrPem);
  }

  private lastPath = '';

  private maybeUnavailable(): void {
    if (this.unavailableFor > 0) {
      this.unavailableFor--;
      throw new ServerUnavailableError('connection refused');
    }
  }

  private maybeBusy(): void {
    const status = this.busy.shift();
    if (status === 429) {
      // With the server's Retry-After (40 ms), above the test backoff (5 to 10 ms).
      throw new AgentApiError(429, 'resource_exhausted', 'x509pop: too many challenges outstanding', 40);
    }
    if (status !== undefined) throw new AgentApiError(status, 'unavailable', 'database unavailable');
  }

  private async issue(path: string, csrPem: string): Promise<AttestationResponse> {
    this.lastPath = path;
    const publicKey = await importPublicKeySpki(parseCsrFast(csrPem).spkiDer);
    const now = Date.now();
    const svid = await ca.createX509Svid(`spiffe://example.org${path}`, {
      keys: { publicKey, privateKey: publicKey },
      notBefore: new Date(now - 10_000),
      notAfter: new Date(now + this.ttlSeconds * 1000),
    });
    return {
      spiffeId: SpiffeId.parse(`spiffe://example.org${path}`),
      chain: svid.chainDer(),
      expiresAt: svid.certificate.notAfter,
      bundle: ca.bundle(),
    };
  }
}

let server: FakeAttestationServer;

function manager(
  attestation: NodeAttestationConfig | undefined,
  clock?: Clock,
  more: Pick<AgentManagerOptions, 'onRenewal'> = {},
): { manager: AgentManager; identity: AgentIdentity } {
  const identity = new AgentIdentity({ kind: 'bundle', file: 'bundle.pem', bundle: ca.bundle() }, td);
  const instance = new AgentManager(identity, server, new AgentStorage(dir), {
    attestation,
    trustDomain: td,
    random: () => 0.5,
    backoff: new Backoff(5, 10, () => 0.5),
    logger: quiet,
    ...(clock !== undefined && { clock }),
    ...more,
  });
  return { manager: instance, identity };
}

async function until(condition: () => boolean): Promise<void> {
  // At least 20 s: signing and the sync loop share two loaded cores with the rest of the suite.
  for (let i = 0; i < 2000 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(condition()).toBe(true);
}

const token = (value: string): NodeAttestationConfig => ({ type: 'join_token', options: { token: value } });
const started: AgentManager[] = [];

beforeAll(async () => {
  ca = await TestCa.create('example.org');
  popCa = await TestCa.create('pop.example', { uris: [] });
});

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sigil-agent-manager-'));
  server = new FakeAttestationServer();
});

afterEach(async () => {
  vi.useRealTimers();
  for (const each of started.splice(0)) await each.stop();
  await rm(dir, { recursive: true, force: true });
});

async function start(
  attestation: NodeAttestationConfig | undefined,
  more: Pick<AgentManagerOptions, 'onRenewal'> = {},
) {
  const built = manager(attestation, undefined, more);
  started.push(built.manager);
  await built.manager.start();
  return built;
}

describe('AgentManager', () => {
  it('attests with a join token, persists the SVID, and resumes from disk after a restart without a token', async () => {
    const first = await start(token('tok-1'));
    expect(server.calls).toEqual(['join_token:tok-1']);
    const agentId = first.identity.current()?.spiffeId.toString();
    expect(agentId).toMatch(/^spiffe:\/\/example\.org\/sigil\/agent\/join_token\//);
    expect(first.identity.credentials()?.privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    await first.manager.stop();

    const second = await start(undefined);
    expect(server.calls).toEqual(['join_token:tok-1']);
    expect(second.identity.current()?.spiffeId.toString()).toBe(agentId);
    expect(second.identity.current()?.state.usedCredentialSha256).toBe(joinTokenDigest('tok-1'));
  });

  it('cannot start without a usable stored SVID and without a method to attest with', async () => {
    await expect(manager(undefined).manager.start()).rejects.toThrow(
      new AgentFatalError(
        'cannot start: no stored agent SVID, and no node attestor is configured (--node-attestor, --join-token or --x509pop-cert/--x509pop-key)',
      ),
    );
  });

  it('refuses to reuse the join token it already attested with once the stored SVID expired', async () => {
    await (await start(token('tok-1'))).manager.stop();
    const later: Clock = { now: () => new Date(Date.now() + 2 * 3_600_000) };
    await expect(manager(token('tok-1'), later).manager.start()).rejects.toThrow(
      /^cannot start: stored agent SVID expired at .*, and the configured join token was already used by this agent/,
    );
    expect(server.calls).toEqual(['join_token:tok-1']);
  });

  it('stops with the server reason when attestation is refused, and retries while no server answers', async () => {
    server.unavailableFor = 2;
    await start(token('tok-1'));
    expect(server.calls).toEqual(['join_token:tok-1', 'join_token:tok-1', 'join_token:tok-1']);
    await rm(dir, { recursive: true, force: true });
    server.refuseAttestation = new AgentApiError(401, 'unauthenticated', 'join token not found or already used');
    await expect(manager(token('tok-2')).manager.start()).rejects.toThrow(
      'node attestation (join_token) refused by the server: join token not found or already used',
    );
  });

  it('stops with a clear message when the server refuses a join-token agent (evicted or banned), renewal included', async () => {
    const { manager: running } = await start(token('tok-1'));
    server.refuseRenewal = new AgentApiError(403, 'permission_denied', 'agent is banned');
    running.agentRefused(new AgentApiError(403, 'permission_denied', 'agent is banned'));
    const fatal = await running.fatal;
    expect(server.calls).toEqual(['join_token:tok-1', 'renew']);
    expect(fatal.message).toBe(
      "the server refused this agent (agent is banned) and it cannot attest again: its join token was already used; generate a new one with 'sigil-server token generate' and restart the agent with --join-token",
    );
  });

  it('says why when the refused agent SVID was issued by a tainted authority (revoked before it re-signed)', async () => {
    const { manager: running, identity } = await start(token('tok-1'));
    const [issuer] = chainIssuerIds(identity.current()!.state.svidChain);
    running.taint(new Set([issuer!]));
    const refused = 'client certificate: certificate chain does not chain to a trusted authority of example.org';
    server.refuseRenewal = new AgentApiError(401, 'unauthenticated', refused);
    running.agentRefused(new AgentApiError(401, 'unauthenticated', refused));
    const fatal = await running.fatal;
    expect(fatal.message).toBe(
      `the server refused this agent (${refused}): its SVID was issued by the tainted X.509 authority ${issuer}, ` +
        'which the server no longer trusts (revoked, or the upstream root it chains to removed, before this agent ' +
        "re-signed) and it cannot attest again: its join token was already used; generate a new one with 'sigil-server " +
        "token generate' and restart the agent with --join-token",
    );
  });

  it('goes on when the server refused a join-token agent once but accepts its renewal', async () => {
    const { manager: running, identity } = await start(token('tok-1'));
    const first = identity.current();
    let fatal: Error | undefined;
    void running.fatal.then((error) => (fatal = error));
    running.agentRefused(new AgentApiError(403, 'permission_denied', 'agent is not attested (evicted or unknown)'));
    await until(() => identity.current() !== first);
    expect(server.calls).toEqual(['join_token:tok-1', 'renew']);
    expect(fatal).toBeUndefined();
  });

  it('a refused join token stops for the operator (exit 78); a refused x509pop attestation exits to be restarted', async () => {
    server.refuseAttestation = new AgentApiError(401, 'unauthenticated', 'join token not found or already used');
    const joinToken = await manager(token('tok-1'))
      .manager.start()
      .catch((error: unknown) => error);
    expect(joinToken).toBeInstanceOf(AgentFatalError);
    expect(exitCodeOf(joinToken as AgentFatalError)).toBe(AGENT_FATAL_EXIT_CODE);

    // A stranger behind the node's address can void its challenge: the next start may well succeed.
    const leaf = await popCa.createX509Svid('spiffe://pop.example/x', { uris: [], subject: 'CN=node-1' });
    await writeFile(join(dir, 'node.pem'), leaf.certificate.toString('pem'));
    await writeFile(join(dir, 'node.key'), toPem(PEM_LABEL.privateKey, await leaf.privateKeyPkcs8()));
    server.refuseAttestation = new AgentApiError(
      403,
      'permission_denied',
      'x509pop: challenge_id is unknown, expired or already answered',
    );
    const method: NodeAttestationConfig = {
      type: 'x509pop',
      options: { cert_file: join(dir, 'node.pem'), key_file: join(dir, 'node.key') },
    };
    const x509pop = await manager(method)
      .manager.start()
      .catch((error: unknown) => error);
    expect(x509pop).toBeInstanceOf(AgentFatalError);
    expect((x509pop as Error).message).toMatch(
      /^node attestation \(x509pop\) refused by the server: x509pop: challenge_id is unknown, expired or already answered \(attested because /,
    );
    expect(exitCodeOf(x509pop as AgentFatalError)).toBe(AGENT_RESTART_EXIT_CODE);
  });

  it('attests again with x509pop when the server no longer accepts the agent', async () => {
    const leaf = await popCa.createX509Svid('spiffe://pop.example/x', { uris: [], subject: 'CN=node-1' });
    const certFile = join(dir, 'node.pem');
    const keyFile = join(dir, 'node.key');
    await writeFile(certFile, leaf.certificate.toString('pem'));
    await writeFile(keyFile, toPem(PEM_LABEL.privateKey, await leaf.privateKeyPkcs8()));
    const method: NodeAttestationConfig = { type: 'x509pop', options: { cert_file: certFile, key_file: keyFile } };
    const { manager: running, identity } = await start(method);
    expect(server.calls).toEqual(['x509pop:challenge', 'x509pop:attest']);
    const first = identity.current()?.state.svidChain[0];
    running.agentRefused(new AgentApiError(401, 'unauthenticated', 'agent was evicted'));
    await until(() => server.calls.length === 4);
    await until(() => identity.current()?.state.svidChain[0] !== first);
    expect(identity.current()?.spiffeId.toString()).toBe(
      `spiffe://example.org/sigil/agent/x509pop/${new X509Certificate(new Uint8Array(leaf.certificate.rawData)).fingerprint.replaceAll(':', '').toLowerCase()}`,
    );
  });

  it('attests again with x509pop when its SVID expired before a renewal got through, instead of renewing with it', async () => {
    const leaf = await popCa.createX509Svid('spiffe://pop.example/x', { uris: [], subject: 'CN=node-1' });
    const certFile = join(dir, 'node.pem');
    const keyFile = join(dir, 'node.key');
    await writeFile(certFile, leaf.certificate.toString('pem'));
    await writeFile(keyFile, toPem(PEM_LABEL.privateKey, await leaf.privateKeyPkcs8()));
    server.ttlSeconds = 1;
    const { identity } = await start({ type: 'x509pop', options: { cert_file: certFile, key_file: keyFile } });
    const first = identity.current()!;
    // No renewal gets through until the SVID has expired (this fake server would renew an expired one: Sigil's does not).
    server.unavailableFor = Number.MAX_SAFE_INTEGER;
    await until(() => Date.now() > first.expiresAt.getTime());
    server.ttlSeconds = 3600;
    server.unavailableFor = 0;
    // Its renewals are attestations too (SPIRE's rule): the count only says one came after the expiry.
    await until(() => server.calls.filter((call) => call === 'x509pop:attest').length >= 2);
    await until(() => identity.current() !== first);
    expect(identity.current()!.expiresAt.getTime()).toBeGreaterThan(Date.now());
    expect(identity.current()!.spiffeId.equals(first.spiffeId)).toBe(true);
    const attestAgain = server.calls.lastIndexOf('x509pop:attest');
    expect(server.calls.slice(attestAgain)).not.toContain('renew');
  });

  it('says what to do when its SVID expired and its join token is spent, and does not renew with the expired SVID', async () => {
    const errors: Record<string, unknown>[] = [];
    const identity = new AgentIdentity({ kind: 'bundle', file: 'bundle.pem', bundle: ca.bundle() }, td);
    const running = new AgentManager(identity, server, new AgentStorage(dir), {
      attestation: token('tok-1'),
      trustDomain: td,
      random: () => 0.5,
      backoff: new Backoff(5, 10, () => 0.5),
      logger: { ...quiet, error: (entry: Record<string, unknown>) => void errors.push(entry) },
    });
    started.push(running);
    server.ttlSeconds = 1;
    await running.start();
    server.unavailableFor = Number.MAX_SAFE_INTEGER;
    await until(() => Date.now() > identity.current()!.expiresAt.getTime() && errors.length > 0);
    expect(errors[0]).toMatchObject({
      msg: 'the agent SVID expired before it could be renewed and this agent cannot attest again',
      remedy:
        "its join token was already used; generate a new one with 'sigil-server token generate' and restart the agent with --join-token",
    });
    expect(server.calls.filter((call) => call.startsWith('join_token'))).toEqual(['join_token:tok-1']);
  });

  it('retries attestation with backoff while the server answers 429 or 503, then attests instead of exiting', async () => {
    const leaf = await popCa.createX509Svid('spiffe://pop.example/x', { uris: [], subject: 'CN=node-1' });
    const certFile = join(dir, 'node.pem');
    const keyFile = join(dir, 'node.key');
    await writeFile(certFile, leaf.certificate.toString('pem'));
    await writeFile(keyFile, toPem(PEM_LABEL.privateKey, await leaf.privateKeyPkcs8()));
    server.busy = [429, 429];
    const warnings = vi.spyOn(quiet, 'warn');
    const { identity } = await start({ type: 'x509pop', options: { cert_file: certFile, key_file: keyFile } });
    expect(server.calls).toEqual(['x509pop:challenge', 'x509pop:challenge', 'x509pop:challenge', 'x509pop:attest']);
    // Each 429 is retried after the server's Retry-After, not the (shorter) backoff.
    const entries = warnings.mock.calls.map((call) => (call as unknown[])[0] as { msg: string; retryInMs: number });
    const retries = entries.filter(
      (entry) =>
        entry.msg === 'server cannot attest this node now (busy, or a service it needs is unavailable), will retry',
    );
    expect(retries.map((entry) => entry.retryInMs)).toEqual([40, 40]);
    expect(identity.current()?.spiffeId.path).toMatch(/^\/sigil\/agent\/x509pop\//);

    await rm(dir, { recursive: true, force: true });
    server.calls = [];
    server.busy = [503, 429];
    const joined = await start(token('tok-busy'));
    expect(server.calls).toEqual(['join_token:tok-busy', 'join_token:tok-busy', 'join_token:tok-busy']);
    expect(joined.identity.current()?.spiffeId.path).toMatch(/^\/sigil\/agent\/join_token\//);
  });

  it('rejects an x509pop key that is not the certificate key', async () => {
    const leaf = await popCa.createX509Svid('spiffe://pop.example/x', { uris: [] });
    const other = await popCa.createX509Svid('spiffe://pop.example/y', { uris: [] });
    const certFile = join(dir, 'node.pem');
    const keyFile = join(dir, 'other.key');
    await writeFile(certFile, leaf.certificate.toString('pem'));
    await writeFile(keyFile, toPem(PEM_LABEL.privateKey, await other.privateKeyPkcs8()));
    await expect(
      manager({ type: 'x509pop', options: { cert_file: certFile, key_file: keyFile } }).manager.start(),
    ).rejects.toThrow(`x509pop key: ${keyFile} is not the private key of the first certificate of ${certFile}`);
  });

  it('renews an x509pop agent SVID at half its life by attesting again, and takes no refusal of the old SVID as a verdict', async () => {
    const leaf = await popCa.createX509Svid('spiffe://pop.example/x', { uris: [], subject: 'CN=node-1' });
    const certFile = join(dir, 'node.pem');
    const keyFile = join(dir, 'node.key');
    await writeFile(certFile, leaf.certificate.toString('pem'));
    await writeFile(keyFile, toPem(PEM_LABEL.privateKey, await leaf.privateKeyPkcs8()));
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    vi.setSystemTime(Math.ceil(Date.now() / 1000) * 1000);
    server.ttlSeconds = 100;
    const { manager: running, identity } = await start({
      type: 'x509pop',
      options: { cert_file: certFile, key_file: keyFile },
    });
    const first = identity.current()!;
    const firstCredentials = identity.credentials();
    await vi.advanceTimersByTimeAsync(49_000);
    expect(server.calls).toEqual(['x509pop:challenge', 'x509pop:attest']);
    await vi.advanceTimersByTimeAsync(1_000);
    const deadline = performance.now() + 20_000;
    while (identity.current() === first && performance.now() < deadline) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    vi.useRealTimers();
    // Attested again (the server refuses such an agent a renewal), never renewed.
    expect(server.calls).toEqual(['x509pop:challenge', 'x509pop:attest', 'x509pop:challenge', 'x509pop:attest']);
    expect(identity.current()?.spiffeId.equals(first.spiffeId)).toBe(true);
    expect(identity.current()?.state.privateKeyPkcs8).not.toEqual(first.state.privateKeyPkcs8);
    // A request made with the previous SVID while that went on is refused: no reason to attest once more.
    running.agentRefused(
      new AgentApiError(403, 'permission_denied', 'SVID serial 01 is not the current one', undefined, firstCredentials),
    );
    await running.stop();
    expect(server.calls).toHaveLength(4);
  });

  it('renews by the renewal route when the server refuses this agent a re-attestation (a plug-in that cannot)', async () => {
    const leaf = await popCa.createX509Svid('spiffe://pop.example/x', { uris: [], subject: 'CN=node-1' });
    const certFile = join(dir, 'node.pem');
    const keyFile = join(dir, 'node.key');
    await writeFile(certFile, leaf.certificate.toString('pem'));
    await writeFile(keyFile, toPem(PEM_LABEL.privateKey, await leaf.privateKeyPkcs8()));
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    vi.setSystemTime(Math.ceil(Date.now() / 1000) * 1000);
    server.ttlSeconds = 100;
    let renewed = 0;
    const { identity } = await start(
      { type: 'x509pop', options: { cert_file: certFile, key_file: keyFile } },
      { onRenewal: (outcome) => void (outcome === 'ok' && renewed++) },
    );
    server.reattestable = false;
    server.refuseAttestation = new AgentApiError(403, 'permission_denied', 'cannot attest it again');
    for (const renewal of [1, 2]) {
      const before = identity.current()!;
      await vi.advanceTimersByTimeAsync(renewal === 1 ? 50_000 : 100_000);
      // Until the renewal has finished: the new SVID installed and saved, and the renewal timer armed again (in the
      // same turn). Waiting for the saved files alone let the next advance run while the save was still syncing, with
      // no timer armed: the renewal then finished at the advanced time, past the new SVID's renewal time and expiry.
      const deadline = performance.now() + 20_000;
      while (renewed < renewal && performance.now() < deadline) {
        await new Promise((resolve) => setImmediate(resolve));
      }
      const stored = await new AgentStorage(dir).load(td);
      const current = identity.current()!;
      expect([renewal, renewed, current !== before]).toEqual([renewal, renewal, true]);
      expect(Buffer.compare(stored!.svidChain[0]!, current.state.svidChain[0]!)).toBe(0);
    }
    vi.useRealTimers();
    // Asked once to attest again, refused; renewed then, and from then on.
    expect(server.calls.slice(2)).toEqual(['x509pop:challenge', 'x509pop:attest', 'renew', 'renew']);
  });

  it('renews the agent SVID at half its life with a new key, and persists it', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    vi.setSystemTime(Math.ceil(Date.now() / 1000) * 1000);
    server.ttlSeconds = 100;
    const { identity } = await start(token('tok-1'));
    const first = identity.current()!;
    await vi.advanceTimersByTimeAsync(49_000);
    expect(server.calls).toEqual(['join_token:tok-1']);
    await vi.advanceTimersByTimeAsync(1_000);
    // The renewal finishes under the same (fake) time it started at: switching to the real clock while it was in
    // flight made the new SVID look not yet valid to the agent now and then, and it renewed again.
    const deadline = performance.now() + 20_000;
    while (identity.current() === first && performance.now() < deadline) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    vi.useRealTimers();
    expect(server.calls).toEqual(['join_token:tok-1', 'renew']);
    expect(identity.current()?.spiffeId.equals(first.spiffeId)).toBe(true);
    expect(identity.current()?.state.privateKeyPkcs8).not.toEqual(first.state.privateKeyPkcs8);
    // The new SVID is installed first and saved right after (a save that fails must not lose it: the server already
    // refuses the previous one).
    let stored = await new AgentStorage(dir).load(td);
    while (stored?.svidChain[0] !== undefined && performance.now() < deadline) {
      if (Buffer.compare(stored.svidChain[0], identity.current()!.state.svidChain[0]!) === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
      stored = await new AgentStorage(dir).load(td);
    }
    expect(stored?.svidChain).toEqual(identity.current()?.state.svidChain);
  });
});
