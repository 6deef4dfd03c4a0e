/** The kubelet client against the fake kubelet on a real TLS socket: verification, the token, the bounds. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FakeKubelet, type FakePod } from '../../../../../../test/support/fake-kubelet.js';
import { TestCa } from '../../../../../../test/support/test-ca.js';
import { KubeletClient, type KubeletClientOptions, KubeletError } from './kubelet-client.js';
import { parsePodList } from './pods.js';

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.agent-token-1.sig';
const ROTATED = 'eyJhbGciOiJSUzI1NiJ9.agent-token-2.sig';
const pod: FakePod = {
  uid: '11111111-2222-3333-4444-555555555555',
  name: 'web-0',
  namespace: 'shop',
  serviceAccount: 'web',
  nodeName: 'node-1',
  containers: [{ name: 'app', image: 'nginx:1.27', id: 'a'.repeat(64) }],
};

describe('KubeletClient', () => {
  let kubelet: FakeKubelet;
  let dir: string;
  let caPath: string;
  let otherCaPath: string;
  let tokenPath: string;
  const clients: KubeletClient[] = [];

  const client = (options: Partial<KubeletClientOptions> = {}): KubeletClient => {
    const created = new KubeletClient({
      host: '127.0.0.1',
      port: kubelet.port,
      serverName: 'node-1',
      caPath,
      skipVerification: false,
      tokenPath,
      timeoutMs: 5_000,
      maxResponseBytes: 1024 * 1024,
      ...options,
    });
    clients.push(created);
    return created;
  };

  beforeAll(async () => {
    kubelet = await FakeKubelet.start({ nodeName: 'node-1', tokens: [TOKEN], pods: [pod] });
    dir = await mkdtemp(join(tmpdir(), 'sigil-kubelet-client-'));
    caPath = join(dir, 'ca.crt');
    otherCaPath = join(dir, 'other-ca.crt');
    tokenPath = join(dir, 'token');
    await writeFile(caPath, kubelet.caPem);
    const other = await TestCa.create('other.test', { uris: [] });
    await writeFile(otherCaPath, other.certificate.toString('pem'));
  });

  afterEach(async () => {
    for (const created of clients.splice(0)) created.close();
    kubelet.acceptTokens([TOKEN]);
    kubelet.setDelay(0);
    await writeFile(tokenPath, `${TOKEN}\n`);
    await kubelet.restart();
  });

  afterAll(async () => {
    await kubelet?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('reads /pods with the token as bearer token, verifying the certificate against the CA and the node name', async () => {
    await writeFile(tokenPath, `${TOKEN}\n`);
    const pods = parsePodList(await client().fetchPods());
    expect([...pods.keys()]).toEqual([pod.uid]);
    expect(kubelet.authorizationHeaders.at(-1)).toBe(`Bearer ${TOKEN}`);
  });

  it('refuses a kubelet whose certificate does not chain to the CA', async () => {
    await expect(client({ caPath: otherCaPath }).fetchPods()).rejects.toThrow(
      /kubelet https:\/\/127\.0\.0\.1:\d+\/pods: .*(certificate|issuer)/i,
    );
  });

  it('refuses a kubelet whose certificate names another node', async () => {
    await expect(client({ serverName: 'node-2' }).fetchPods()).rejects.toThrow(/node-2/);
  });

  it('checks the chain only, without a node name (SPIRE dials 127.0.0.1 then)', async () => {
    await expect(client({ serverName: undefined }).fetchPods()).resolves.toContain(pod.uid);
    await expect(client({ serverName: undefined, caPath: otherCaPath }).fetchPods()).rejects.toThrow(KubeletError);
  });

  it('accepts any certificate with skip_kubelet_verification, without reading the CA', async () => {
    const skipping = client({ skipVerification: true, caPath: join(dir, 'missing.crt'), serverName: 'node-2' });
    await expect(skipping.fetchPods()).resolves.toContain(pod.uid);
  });

  it('re-reads the token for every request, so a rotated token is used at once', async () => {
    const reader = client();
    await expect(reader.fetchPods()).resolves.toContain(pod.uid);
    kubelet.acceptTokens([ROTATED]);
    await writeFile(tokenPath, ROTATED);
    await expect(reader.fetchPods()).resolves.toContain(pod.uid);
    expect(kubelet.authorizationHeaders.slice(-2)).toEqual([`Bearer ${TOKEN}`, `Bearer ${ROTATED}`]);
  });

  it('fails on 401 without putting the token in the message', async () => {
    kubelet.acceptTokens(['another-token']);
    const error = await client()
      .fetchPods()
      .then(
        () => expect.unreachable('expected a rejection'),
        (caught: unknown) => caught as Error,
      );
    expect(error).toBeInstanceOf(KubeletError);
    expect(error.message).toMatch(/answered 401 Unauthorized \(the service account token was refused\)/);
    expect(error.message).not.toContain(TOKEN);
    expect(error.message).not.toContain('agent-token');
  });

  it('fails with the path when the token file is missing or holds no token, never showing its content', async () => {
    await expect(client({ tokenPath: join(dir, 'no-token') }).fetchPods()).rejects.toThrow(
      /token_path .*no-token: cannot be read/,
    );
    await writeFile(tokenPath, 'two words secret-part');
    const error = await client()
      .fetchPods()
      .then(
        () => expect.unreachable('expected a rejection'),
        (caught: unknown) => caught as Error,
      );
    expect(error.message).toMatch(/token_path .*: must hold one bearer token/);
    expect(error.message).not.toContain('secret-part');
  });

  it('fails when the kubelet is down', async () => {
    await kubelet.stop();
    await expect(client().fetchPods()).rejects.toThrow(/ECONNREFUSED/);
  });

  it('fails when the answer does not come within the timeout', async () => {
    kubelet.setDelay(2_000);
    await expect(client({ timeoutMs: 200 }).fetchPods()).rejects.toThrow(/no complete answer within 200 ms/);
  });

  it('refuses an answer over the size limit', async () => {
    await expect(client({ maxResponseBytes: 100 }).fetchPods()).rejects.toThrow(/over the limit of 100/);
  });

  it('refuses a streamed answer that grows over the limit (no content-length)', async () => {
    const tlsCa = await TestCa.create('big.test', { uris: [] });
    const leaf = await tlsCa.createX509Svid('', { uris: [], dnsNames: ['node-1'] });
    const { createPrivateKey } = await import('node:crypto');
    const key = createPrivateKey({ key: Buffer.from(await leaf.privateKeyPkcs8()), format: 'der', type: 'pkcs8' });
    const big: Server = createServer(
      { cert: leaf.certificate.toString('pem'), key: key.export({ format: 'pem', type: 'pkcs8' }) },
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        const write = (): void => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', write);
        };
        write();
      },
    );
    await new Promise<void>((resolve) => big.listen(0, '127.0.0.1', resolve));
    const bigCaPath = join(dir, 'big-ca.crt');
    await writeFile(bigCaPath, tlsCa.certificate.toString('pem'));
    try {
      await expect(
        client({ port: (big.address() as AddressInfo).port, caPath: bigCaPath }).fetchPods(),
      ).rejects.toThrow(/over the limit of 1048576 bytes/);
    } finally {
      big.closeAllConnections();
      await new Promise<void>((resolve) => big.close(() => resolve()));
    }
  });

  it('checks its files at start: a missing CA or token file is named', async () => {
    await expect(client({ caPath: join(dir, 'missing.crt') }).checkFiles()).rejects.toThrow(
      /kubelet_ca_path .*missing\.crt: cannot be read/,
    );
    await writeFile(join(dir, 'not-pem'), 'hello');
    await expect(client({ caPath: join(dir, 'not-pem') }).checkFiles()).rejects.toThrow(/must hold PEM certificates/);
    await expect(client({ tokenPath: join(dir, 'nothing') }).checkFiles()).rejects.toThrow(/token_path/);
    await expect(client().checkFiles()).resolves.toBeUndefined();
  });
});
