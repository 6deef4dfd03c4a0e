/**
 * Upstream authority sigil against a hostile local agent socket (review R8): whoever answers on
 * `upstream_agent_socket` (here the agent's real Workload API server, h2c on a Unix socket, holding an attacker's CA)
 * must not choose the nested trust domain's roots. The roots come from the upstream server over mTLS, its certificate
 * verified against the upstream roots already stored; the socket's bundle stream is only a trigger.
 */
import { type IncomingMessage, type ServerResponse } from 'node:http';
import { type Server, createServer } from 'node:https';
import { type AddressInfo } from 'node:net';
import { webcrypto } from 'node:crypto';
import { TrustDomain } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingAuthorityMetrics } from '../../../../test/support/authority.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { FakeWorkloadApi } from '../../../../test/support/fake-workload-api.js';
import { TestCa } from '../../../../test/support/test-ca.js';
import { DOWNSTREAM_AUTHORITIES_PATH } from '../downstream/downstream-contract.js';
import type { UpstreamFollowChange } from './key-manager.js';
import { MAX_UPSTREAM_ROOTS } from './upstream-authorities.js';
import { type UpstreamAuthoritiesStore, UpstreamBundleWatcher } from './upstream-bundle-watcher.js';
import { UpstreamSigilAuthority } from './upstream-sigil.js';

const TD = TrustDomain.parse('example.org');
const b64 = (der: Uint8Array): string => Buffer.from(der).toString('base64');
const der = (ca: TestCa): Uint8Array => new Uint8Array(ca.certificate.rawData);
const pem = (ders: readonly Uint8Array[]): string =>
  ders.map((d) => `-----BEGIN CERTIFICATE-----\n${b64(d)}\n-----END CERTIFICATE-----\n`).join('');

/** A journal stand-in holding the stored upstream roots; records every set it is asked to follow. */
class RecordingStore implements UpstreamAuthoritiesStore {
  readonly calls: string[][] = [];
  constructor(public stored: Uint8Array[]) {}
  storedUpstreamAuthorities(): readonly Uint8Array[] {
    return this.stored;
  }
  async followUpstreamAuthorities(roots: readonly Uint8Array[]): Promise<UpstreamFollowChange> {
    this.calls.push(roots.map(b64));
    return { rowIds: ['key'], added: roots.map(b64), removed: [], orphaned: [], jwtAdded: [], jwtRemoved: [] };
  }
}

/**
 * An "upstream server" on 127.0.0.1 presenting `spiffe://example.org/sigil/server` issued by `issuer`, answering the
 * downstream X.509 authorities route with `answer()` (and any other route with 403).
 */
async function upstreamServer(issuer: TestCa, answer: () => unknown): Promise<{ server: Server; port: number }> {
  const svid = await issuer.createX509Svid(`spiffe://${TD.name}/sigil/server`);
  const key = webcrypto.subtle.exportKey('pkcs8', svid.keys.privateKey);
  const server = createServer(
    {
      key: `-----BEGIN PRIVATE KEY-----\n${Buffer.from(await key).toString('base64')}\n-----END PRIVATE KEY-----\n`,
      cert: pem(svid.chainDer()),
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
    },
    (req: IncomingMessage, res: ServerResponse) => {
      const ok = req.method === 'GET' && req.url === DOWNSTREAM_AUTHORITIES_PATH;
      res.writeHead(ok ? 200 : 403, { 'content-type': 'application/json' });
      res.end(JSON.stringify(ok ? answer() : { message: 'no' }));
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

describe('upstream roots (upstream authority sigil) with a hostile agent socket', () => {
  let top: TestCa;
  let topNext: TestCa;
  let hostile: FakeWorkloadApi;
  const servers: Server[] = [];

  beforeAll(async () => {
    [top, topNext] = await Promise.all([TestCa.create(TD), TestCa.create(TD)]);
    // The attacker's agent: its own CA for example.org, so its bundle holds the attacker's root only.
    hostile = await FakeWorkloadApi.start(TD.name, ['/nested-server']);
  });
  afterAll(async () => {
    await hostile.dispose();
    for (const server of servers) server.close();
  });

  async function setup(issuer: TestCa, answer: () => unknown) {
    const { server, port } = await upstreamServer(issuer, answer);
    servers.push(server);
    const config = {
      trustDomain: TD,
      caTtlSeconds: 3600,
      upstreamSigil: {
        agentSocket: hostile.socketPath,
        serverAddress: { host: '127.0.0.1', port, text: `127.0.0.1:${port}` },
      },
    };
    const authority = new UpstreamSigilAuthority(config);
    const store = new RecordingStore([der(top)]);
    const metrics = new RecordingAuthorityMetrics();
    const upstream = { upstreamAuthorities: authority.authorities.bind(authority) };
    const watcher = new UpstreamBundleWatcher(config, store, upstream, new FakeClock(new Date()), metrics);
    return { authority, store, metrics, watcher };
  }

  it("never stores the socket's bundle, and an impostor upstream server fails against the stored roots", async () => {
    const attackerRoot = hostile.ca.root();
    const { authority, store, metrics, watcher } = await setup(attackerRoot, () => ({
      x509_authorities: [b64(der(attackerRoot))],
    }));
    // The impostor's certificate does not chain to the stored root: Node's chain check fails the handshake.
    await expect(authority.authorities([der(top)], new Date())).rejects.toThrow(
      /upstream_server_address 127\.0\.0\.1:\d+: unable to verify the first certificate/,
    );
    // The socket's bundle stream triggers an ask (its content, the attacker's root, is not used).
    watcher.onApplicationBootstrap();
    try {
      await expect.poll(() => metrics.upstreamBundle, { timeout: 20_000 }).toContain('failed:upstream');
      await watcher.refresh();
    } finally {
      await watcher.beforeApplicationShutdown();
    }
    expect(store.calls).toEqual([]);
    expect(metrics.upstreamBundle.filter((outcome) => outcome !== 'failed:upstream')).toEqual([]);
  });

  it('refuses to sign our CA through an impostor upstream server once roots are stored', async () => {
    const attackerRoot = hostile.ca.root();
    const { authority } = await setup(attackerRoot, () => ({}));
    const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    await expect(authority.signCa(keys, new Date(), [der(top)])).rejects.toMatchObject({
      kind: 'unavailable',
      // Node 24 appends a hint about --use-system-ca to this TLS error (it does not apply: the stored roots are pinned).
      message: expect.stringMatching(
        /upstream_server_address 127\.0\.0\.1:\d+: unable to verify the first certificate\b/,
      ),
    });
  });

  it('gives up on an upstream server that answers a byte at a time, at its deadline', async () => {
    const { server, port } = await upstreamServer(top, () => ({}));
    servers.push(server);
    // The answer never ends: one byte every 20 ms keeps the socket's idle timeout from ever firing.
    server.removeAllListeners('request');
    server.on('request', (_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const timer = setInterval(() => res.write(' '), 20);
      res.on('close', () => clearInterval(timer));
    });
    const serverAddress = { host: '127.0.0.1', port, text: `127.0.0.1:${port}` };
    const authority = new UpstreamSigilAuthority(
      { trustDomain: TD, caTtlSeconds: 3600, upstreamSigil: { agentSocket: hostile.socketPath, serverAddress } },
      500,
    );
    await expect(authority.authorities([der(top)], new Date())).rejects.toThrow(/no complete answer within 500 ms/);
  });

  it("follows the genuine upstream server's roots through the same hostile socket, once per change", async () => {
    let answer = [der(top), der(topNext)];
    const { store, metrics, watcher } = await setup(top, () => ({ x509_authorities: answer.map(b64) }));
    await watcher.refresh();
    await watcher.refresh();
    expect(store.calls).toEqual([[b64(der(top)), b64(der(topNext))]]);
    answer = [der(topNext), der(top)];
    await watcher.refresh();
    expect(store.calls).toHaveLength(1);
    expect(metrics.upstreamBundle).toEqual(['changed', 'unchanged', 'unchanged']);
  });

  it('refuses an answer that is not a set of self-signed CA certificates, or more than the cap', async () => {
    const leaf = await top.createX509Svid(`spiffe://${TD.name}/workload`);
    const intermediate = await top.createIntermediate();
    const many = await Promise.all(Array.from({ length: MAX_UPSTREAM_ROOTS + 1 }, () => TestCa.create(TD)));
    const answers: Uint8Array[][] = [
      [der(top), new Uint8Array(leaf.certificate.rawData)],
      [der(intermediate)],
      many.map(der),
    ];
    let index = 0;
    const { store, metrics, watcher } = await setup(top, () => ({ x509_authorities: answers[index]!.map(b64) }));
    for (index = 0; index < answers.length; index += 1) await watcher.refresh();
    expect(store.calls).toEqual([]);
    expect(metrics.upstreamBundle).toEqual(['failed:upstream', 'failed:upstream', 'failed:upstream']);
  });

  it('asks nothing while no upstream root is stored (the first key bootstraps from the agent)', async () => {
    const { store, metrics, watcher } = await setup(top, () => ({ x509_authorities: [b64(der(top))] }));
    store.stored = [];
    await watcher.refresh();
    expect(store.calls).toEqual([]);
    expect(metrics.upstreamBundle).toEqual([]);
    // The reads themselves refuse to trust the agent's bundle: only the first CA key is signed that way.
    const attackerRoot = hostile.ca.root();
    const { authority } = await setup(attackerRoot, () => ({ x509_authorities: [b64(der(attackerRoot))] }));
    for (const read of [authority.authorities([], new Date()), authority.taintedAuthorities([])]) {
      await expect(read).rejects.toThrow(
        'upstream authority sigil: no upstream roots stored yet to authenticate the upstream server with',
      );
    }
  });
});
