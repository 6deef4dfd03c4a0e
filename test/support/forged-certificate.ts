import { type KeyObject, generateKeyPairSync, randomBytes, sign } from 'node:crypto';

/**
 * A certificate forged the way review R6 found (HIGH): Node's X509Certificate reads its input as PEM first, so DER
 * carrying a PEM block in a private extension was read as the embedded certificate. The forged leaf names `issuer`
 * (the DER of a CA's subject) as its issuer and `spiffeId` in its SAN, is signed by a key of its own, and embeds
 * `embeddedPem` (a real certificate that CA signed). Built by hand from DER parts on purpose: no library would.
 */
export function forgeEmbeddingPem(options: {
  issuer: Uint8Array;
  spiffeId: string;
  embeddedPem: string;
  notBefore: Date;
  notAfter: Date;
}): { der: Buffer; privateKeyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))),
    tlv(0x02, Buffer.concat([Buffer.from([0x11]), randomBytes(7)])),
    seq(oid(ECDSA_SHA256)),
    Buffer.from(options.issuer),
    seq(utcTime(options.notBefore), utcTime(options.notAfter)),
    seq(tlv(0x31, seq(oid('2.5.4.10'), tlv(0x0c, Buffer.from('forged'))))),
    publicKey.export({ type: 'spki', format: 'der' }),
    tlv(
      0xa3,
      seq(
        extension('2.5.29.19', true, seq()),
        extension('2.5.29.15', true, tlv(0x03, Buffer.from([0x07, 0x80]))),
        extension('2.5.29.17', false, seq(tlv(0x86, Buffer.from(options.spiffeId)))),
        extension('1.3.6.1.4.1.99999.1', false, Buffer.from(`\n${options.embeddedPem}\n`)),
      ),
    ),
  );
  const signature = sign('sha256', tbs, privateKey);
  return {
    der: seq(tbs, seq(oid(ECDSA_SHA256)), tlv(0x03, Buffer.concat([Buffer.from([0]), signature]))),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  };
}

/**
 * A leaf SVID signed by `signingKey` (a trusted CA's key) whose subject is `subject` as given, raw DER: with
 * `SEQUENCE { INTEGER }` it is a certificate that Sigil's strict DER reader accepts and OpenSSL and @peculiar/x509
 * refuse to read (review R16 LOW-2). Built by hand from DER parts on purpose: no library would.
 */
export function leafWithRawSubject(options: {
  issuer: Uint8Array;
  subject: Buffer;
  spiffeId: string;
  notBefore: Date;
  notAfter: Date;
  signingKey: KeyObject;
}): Buffer {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const tbs = seq(
    tlv(0xa0, tlv(0x02, Buffer.from([2]))),
    tlv(0x02, Buffer.concat([Buffer.from([0x12]), randomBytes(7)])),
    seq(oid(ECDSA_SHA256)),
    Buffer.from(options.issuer),
    seq(utcTime(options.notBefore), utcTime(options.notAfter)),
    options.subject,
    publicKey.export({ type: 'spki', format: 'der' }),
    tlv(0xa3, seq(extension('2.5.29.17', false, seq(tlv(0x86, Buffer.from(options.spiffeId)))))),
  );
  const signature = sign('sha256', tbs, options.signingKey);
  return seq(tbs, seq(oid(ECDSA_SHA256)), tlv(0x03, Buffer.concat([Buffer.from([0]), signature])));
}

/** DER helpers for the tests that build certificates by hand. */
export const der = {
  seq: (...parts: Buffer[]): Buffer => seq(...parts),
  integer: (value: number): Buffer => tlv(0x02, Buffer.from([value])),
};

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
