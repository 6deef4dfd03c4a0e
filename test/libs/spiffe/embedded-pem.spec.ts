import 'reflect-metadata';
import { generateKeyPairSync, randomBytes, sign, X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { TEST_NOW, TestCa } from '../../support/test-ca.js';
import {
  CertificateFormatError,
  nodeCertificateFromDer,
  SpiffeError,
  verifyX509Svid,
  verifyX509SvidSync,
} from '@sigil/spiffe';

// A certificate forged the way review R6 found (HIGH): Node's X509Certificate reads its input as PEM first, so DER
// bytes carrying a PEM block in a private extension were read as the embedded certificate. The forged leaf names the
// CA as issuer and claims an admin SPIFFE ID; the embedded certificate is a real SVID the CA signed (anyone who ever
// got a TLS handshake from its holder has it). Signature checks then ran on the embedded one and passed.

const len = (n: number): Buffer => {
  if (n < 128) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let rest = n; rest > 0; rest >>= 8) bytes.unshift(rest & 255);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
};
const tlv = (tag: number, ...parts: Buffer[]): Buffer => {
  const content = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), len(content.length), content]);
};
const seq = (...parts: Buffer[]): Buffer => tlv(0x30, ...parts);
const oid = (dotted: string): Buffer => {
  const arcs = dotted.split('.').map(Number);
  const out = [40 * arcs[0]! + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const groups: number[] = [];
    let rest = arc;
    do {
      groups.unshift(rest & 127);
      rest = Math.floor(rest / 128);
    } while (rest > 0);
    for (let i = 0; i < groups.length - 1; i += 1) groups[i]! |= 128;
    out.push(...groups);
  }
  return tlv(0x06, Buffer.from(out));
};
const utcTime = (date: Date): Buffer =>
  tlv(0x17, Buffer.from(`${date.toISOString().replace(/[-:T]/g, '').slice(2, 14)}Z`));
const extension = (id: string, critical: boolean, value: Buffer): Buffer =>
  seq(oid(id), ...(critical ? [tlv(0x01, Buffer.from([0xff]))] : []), tlv(0x04, value));
const ECDSA_SHA256 = '1.2.840.10045.4.3.2';

let ca: TestCa;
let forged: Uint8Array;

beforeAll(async () => {
  ca = await TestCa.create('example.org', { now: TEST_NOW });
  const real = await ca.createX509Svid('spiffe://example.org/workload');
  const caSubject = Buffer.from(ca.certificate.subjectName.toArrayBuffer());
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const embedded = Buffer.from(`\n${real.certificate.toString('pem')}\n`);
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))),
    tlv(0x02, Buffer.concat([Buffer.from([0x11]), randomBytes(7)])),
    seq(oid(ECDSA_SHA256)),
    caSubject,
    seq(utcTime(new Date(TEST_NOW.getTime() - 60_000)), utcTime(new Date(TEST_NOW.getTime() + 3_600_000))),
    seq(tlv(0x31, seq(oid('2.5.4.10'), tlv(0x0c, Buffer.from('forged'))))),
    publicKey.export({ type: 'spki', format: 'der' }),
    tlv(
      0xa3,
      seq(
        extension('2.5.29.19', true, seq()),
        extension('2.5.29.15', true, tlv(0x03, Buffer.from([0x07, 0x80]))),
        extension('2.5.29.17', false, seq(tlv(0x86, Buffer.from('spiffe://example.org/admin')))),
        extension('1.3.6.1.4.1.99999.1', false, embedded),
      ),
    ),
  );
  const signature = sign('sha256', tbs, privateKey);
  forged = seq(tbs, seq(oid(ECDSA_SHA256)), tlv(0x03, Buffer.concat([Buffer.from([0]), signature])));
});

describe('a DER certificate that embeds a PEM certificate', () => {
  it('is what Node reads as the embedded certificate (the trap)', () => {
    expect(new X509Certificate(forged).subject).not.toContain('forged');
  });

  it('is refused by nodeCertificateFromDer', () => {
    expect(() => nodeCertificateFromDer(forged)).toThrow(CertificateFormatError);
    expect(() => nodeCertificateFromDer(forged)).toThrow(/not the DER bytes given/);
  });

  it('is refused as an X509-SVID, sync and async, and never verifies against the CA', async () => {
    const bundle = ca.bundle();
    expect(() => verifyX509SvidSync([forged], bundle, { now: TEST_NOW })).toThrow(SpiffeError);
    await expect(verifyX509Svid([forged], bundle, { now: TEST_NOW })).rejects.toThrow(SpiffeError);
  });

  it('leaves genuine certificates alone', async () => {
    const real = await ca.createX509Svid('spiffe://example.org/workload');
    const der = new Uint8Array(real.certificate.rawData);
    expect(nodeCertificateFromDer(der).raw.equals(der)).toBe(true);
    expect(verifyX509SvidSync([der], ca.bundle(), { now: TEST_NOW }).spiffeId.toString()).toBe(
      'spiffe://example.org/workload',
    );
  });
});
