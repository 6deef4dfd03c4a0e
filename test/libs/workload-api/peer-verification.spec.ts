import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey } from 'node:crypto';
import { once } from 'node:events';
import { type AddressInfo } from 'node:net';
import { type Server, connect, createServer } from 'node:tls';
import { TrustBundle, TrustBundleSet, type X509Svid, parseX509Svid, verifyX509Svid } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyUsage, TestCa, type CertificateOptions, type TestSvid } from '../../support/test-ca.js';
import { authorizeAny } from '../../../libs/workload-api/src/authorizer.js';
import { WorkloadApiError } from '../../../libs/workload-api/src/errors.js';
import { verifyPeer, verifyPeerSync } from '../../../libs/workload-api/src/peer-verification.js';
import { type X509TlsSource, createClientTlsOptions } from '../../../libs/workload-api/src/tls.js';

// Real time, not a fixed date: the TLS case goes through OpenSSL, which checks validity against the clock.
const NOW = new Date();
const ID = 'spiffe://example.org/server';
const HOUR = 3_600_000;
const criticalExtension = (): x509.Extension => new x509.Extension('1.2.3.4.5', true, new Uint8Array([5, 0]));

let root: TestCa;
/** A second root of example.org (as during a CA rotation) that allows no intermediate below it. */
let strictRoot: TestCa;
let bundles: TrustBundleSet;

beforeAll(async () => {
  root = await TestCa.create('example.org', { now: NOW });
  strictRoot = await TestCa.create('example.org', { now: NOW, pathLength: 0 });
  const other = await TestCa.create('other.org', { now: NOW });
  bundles = new TrustBundleSet([
    TrustBundle.create(root.trustDomain, { x509Authorities: [root.certificate, strictRoot.certificate] }),
    other.bundle(),
  ]);
});

type Case = readonly [name: string, make: () => Promise<TestSvid>, rule: string];

const leaf =
  (options: CertificateOptions, id = ID) =>
  (): Promise<TestSvid> =>
    root.createX509Svid(id, options);
const underIntermediate = (options: CertificateOptions) => async (): Promise<TestSvid> =>
  (await root.createIntermediate(options)).createX509Svid(ID);

const cases: readonly Case[] = [
  ['a leaf with cA=true', leaf({ isCa: true }), 'leaf certificate must not be a ca'],
  [
    'a leaf with keyCertSign',
    leaf({ keyUsage: KeyUsage.digitalSignature | KeyUsage.keyCertSign }),
    'leaf certificate must not have keyCertSign key usage',
  ],
  [
    'a leaf with cRLSign',
    leaf({ keyUsage: KeyUsage.digitalSignature | KeyUsage.cRLSign }),
    'leaf certificate must not have cRLSign key usage',
  ],
  [
    'a leaf without digitalSignature',
    leaf({ keyUsage: KeyUsage.keyEncipherment }),
    'leaf certificate must have digitalSignature key usage',
  ],
  [
    'a leaf with two uri sans',
    leaf({ uris: [ID, 'spiffe://example.org/other'] }),
    'leaf certificate must have exactly one uri san, got 2',
  ],
  ['a leaf without uri san', leaf({ uris: [], dnsNames: ['server.example.org'] }), 'exactly one uri san, got 0'],
  ['a leaf naming the trust domain', leaf({}, 'spiffe://example.org'), 'must have a path'],
  [
    'a leaf with an unknown critical extension',
    leaf({ extraExtensions: [criticalExtension()] }),
    'leaf certificate has an unsupported critical extension 1.2.3.4.5',
  ],
  [
    'an expired leaf',
    leaf({ notBefore: new Date(NOW.getTime() - 2 * HOUR), notAfter: new Date(NOW.getTime() - HOUR) }),
    'leaf certificate expired at',
  ],
  ['an intermediate that is not a ca', underIntermediate({ isCa: false }), 'must be a ca (basicConstraints cA=true)'],
  [
    'an intermediate without basic constraints',
    underIntermediate({ isCa: null }),
    'must be a ca (basicConstraints cA=true)',
  ],
  [
    'an intermediate without keyCertSign',
    underIntermediate({ keyUsage: KeyUsage.cRLSign }),
    'must have keyCertSign key usage',
  ],
  ['an intermediate without key usage', underIntermediate({ keyUsage: null }), 'must have keyCertSign key usage'],
  [
    'an intermediate with an unknown critical extension',
    underIntermediate({ extraExtensions: [criticalExtension()] }),
    'has an unsupported critical extension 1.2.3.4.5',
  ],
  [
    'an intermediate below a root that allows none',
    async () => (await strictRoot.createIntermediate()).createX509Svid(ID),
    'allows 0 intermediate(s) below it, the chain has 1',
  ],
  [
    'a leaf of example.org issued by the federated other.org root',
    async () => (await TestCa.create('other.org', { now: NOW })).createX509Svid(ID),
    'does not chain to a trusted authority of example.org',
  ],
];

/** The message `verifyX509Svid` gives, which both peer checks must repeat. */
async function referenceMessage(svid: TestSvid): Promise<string> {
  try {
    await verifyX509Svid(svid.chainDer(), bundles, { now: NOW });
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('verifyX509Svid accepted the chain');
}

function syncRejection(run: () => unknown): WorkloadApiError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(WorkloadApiError);
    return error as WorkloadApiError;
  }
  throw new Error('verifyPeerSync accepted the chain');
}

describe('verifyPeer and verifyPeerSync apply the rules of verifyX509Svid', () => {
  it.each(cases)('both refuse %s with the same message', async (_name, make, rule) => {
    const svid = await make();
    const expected = await referenceMessage(svid);
    expect(expected).toContain(rule);

    const asyncError = await verifyPeer(svid.chainDer(), bundles, authorizeAny(), NOW).then(
      () => {
        throw new Error('verifyPeer accepted the chain');
      },
      (error: unknown) => error as WorkloadApiError,
    );
    const syncError = syncRejection(() => verifyPeerSync(svid.chainDer(), bundles, authorizeAny(), NOW));
    for (const error of [asyncError, syncError]) {
      expect(error.code).toBe('ERR_PEER_REJECTED');
      expect(error.message).toBe(`peer x509 svid rejected: ${expected}`);
    }
  });

  it('both accept a valid chain through an intermediate, with the same verified chain', async () => {
    const svid = await (await root.createIntermediate()).createX509Svid(ID);
    const fromAsync = await verifyPeer(svid.chainDer(), bundles, authorizeAny(), NOW);
    const fromSync = verifyPeerSync(svid.chainDer(), bundles, authorizeAny(), NOW);
    expect(fromSync.spiffeId.toString()).toBe(ID);
    expect(fromSync.verifiedChain.map((cert) => cert.fingerprint256)).toEqual(
      fromAsync.verifiedChain.map((cert) => cert.fingerprint256),
    );
    expect(fromSync.verifiedChain).toHaveLength(3);
  });
});

describe('a TLS client (createClientTlsOptions) refuses a server presenting a bad X.509-SVID', () => {
  let client: X509Svid;
  const servers: Server[] = [];

  beforeAll(async () => {
    const svid = await root.createX509Svid('spiffe://example.org/client');
    client = await parseX509Svid(svid.chainDer(), await svid.privateKeyPkcs8());
  });

  afterAll(() => {
    for (const server of servers) server.close();
  });

  const source = (): X509TlsSource => ({
    getX509Svid: () => client,
    getBundles: (): Iterable<TrustBundle> => bundles.bundles(),
    getBundleForTrustDomain: (td) => bundles.getBundleForTrustDomain(td),
  });

  async function serve(svid: TestSvid): Promise<number> {
    const key = createPrivateKey({ key: Buffer.from(await svid.privateKeyPkcs8()), format: 'der', type: 'pkcs8' });
    const server = createServer({
      key: key.export({ type: 'pkcs8', format: 'pem' }),
      cert: svid.chain.map((cert) => cert.toString('pem')).join('\n'),
    });
    server.on('tlsClientError', () => undefined);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    servers.push(server);
    return (server.address() as AddressInfo).port;
  }

  function handshake(port: number): Promise<Error | undefined> {
    return new Promise((resolve) => {
      const socket = connect({
        ...createClientTlsOptions(source(), authorizeAny(), { now: () => NOW }),
        host: '127.0.0.1',
        port,
      });
      socket.once('secureConnect', () => {
        socket.destroy();
        resolve(undefined);
      });
      socket.once('error', (error) => resolve(error));
    });
  }

  it('connects to a server with a valid X.509-SVID', async () => {
    expect(await handshake(await serve(await root.createX509Svid(ID)))).toBeUndefined();
  });

  it.each(cases)('refuses %s', async (_name, make) => {
    const svid = await make();
    const error = await handshake(await serve(svid));
    expect(error).toBeDefined();
    // OpenSSL refuses some chains itself (a non-CA intermediate, an unknown critical extension, an unknown root);
    // every chain OpenSSL lets through must be refused by the SPIFFE rules, with verifyX509Svid's message.
    if (error instanceof WorkloadApiError) {
      expect(error.message).toBe(`peer x509 svid rejected: ${await referenceMessage(svid)}`);
    }
  });
});
