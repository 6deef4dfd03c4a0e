/**
 * `signedBy` (libs/spiffe/src/certificate.ts) checks certificate signatures with `crypto.verify` over the tbsCertificate
 * bytes the DER reader delimits, instead of OpenSSL's parse of both certificates (Node's `X509Certificate.verify`), for
 * the algorithms of its table; everything else goes to Node's check. A differential test: for every certificate of a
 * corpus (right and wrong issuers, every bit of a signature flipped, algorithm fields that disagree or carry other
 * parameters, BIT STRINGs with unused bits, truncated and non-DER signatures, RSASSA-PSS), its answer is Node's, and
 * for a few the `openssl verify` command's.
 */
import { execFileSync } from 'node:child_process';
import { type KeyObject, X509Certificate, constants, generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CertificateView, parseCertificate, signedBy } from '../../../libs/spiffe/src/certificate.js';
import { TrustBundle, TrustDomain } from '../../../libs/spiffe/src/index.js';

// --- DER, just enough to write certificates field by field ---

function tlv(tag: number, ...parts: Uint8Array[]): Buffer {
  const content = Buffer.concat(parts);
  const n = content.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...length]), content]);
}
const seq = (...parts: Uint8Array[]): Buffer => tlv(0x30, ...parts);
const hex = (text: string): Buffer => Buffer.from(text.replace(/\s/g, ''), 'hex');
const name = (cn: string): Buffer => seq(tlv(0x31, seq(hex('0603550403'), tlv(0x0c, Buffer.from(cn)))));
const bitString = (unused: number, bytes: Uint8Array): Buffer => tlv(0x03, Buffer.from([unused]), bytes);

/** AlgorithmIdentifier DER: the six of signedBy's table, then variants it leaves to OpenSSL. */
const ALG = {
  ecdsaSha256: hex('300a06082a8648ce3d040302'),
  ecdsaSha384: hex('300a06082a8648ce3d040303'),
  ecdsaSha512: hex('300a06082a8648ce3d040304'),
  rsaSha256: hex('300d06092a864886f70d01010b0500'),
  rsaSha384: hex('300d06092a864886f70d01010c0500'),
  rsaSha512: hex('300d06092a864886f70d01010d0500'),
  ecdsaSha256NullParams: hex('300c06082a8648ce3d0403020500'),
  rsaSha256NoParams: hex('300b06092a864886f70d01010b'),
  // RSASSA-PSS, SHA-256, MGF1 with SHA-256, salt length 32 (RFC 4055).
  rsaPssSha256: hex(`3041 06092a864886f70d01010a 3034
    a00f 300d 0609608648016503040201 0500
    a11c 301a 06092a864886f70d010108 300d 0609608648016503040201 0500
    a203 020120`),
} as const;

type Signer = 'sha256' | 'sha384' | 'sha512' | 'pss';

interface Issuer {
  readonly label: string;
  readonly privateKey: KeyObject;
  readonly spki: Buffer;
  readonly der: Buffer;
  readonly view: CertificateView;
}

function signBytes(tbs: Uint8Array, key: KeyObject, signer: Signer): Buffer {
  if (signer === 'pss') {
    return sign('sha256', tbs, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
  }
  return sign(signer, tbs, key);
}

let serial = 1;

/** A tbsCertificate (v3) with `algorithm` as its signature field; a CA's keyCertSign extensions when `ca`. */
function tbsOf(algorithm: Uint8Array, issuer: string, subject: string, spki: Uint8Array, ca: boolean): Buffer {
  const extensions = ca
    ? [
        tlv(
          0xa3,
          seq(
            seq(hex('0603551d13'), hex('0101ff'), tlv(0x04, seq(hex('0101ff')))),
            seq(hex('0603551d0f'), hex('0101ff'), tlv(0x04, hex('03020106'))),
          ),
        ),
      ]
    : [];
  return seq(
    tlv(0xa0, hex('020102')),
    tlv(0x02, Buffer.from([0x10, serial++ & 0xff])),
    algorithm,
    name(issuer),
    seq(tlv(0x17, Buffer.from('200101000000Z')), tlv(0x18, Buffer.from('20991231235959Z'))),
    name(subject),
    spki,
    ...extensions,
  );
}

const certificate = (tbs: Uint8Array, algorithm: Uint8Array, signatureValue: Uint8Array): Buffer =>
  seq(tbs, algorithm, signatureValue);

function issuer(label: string, privateKey: KeyObject, spki: Buffer, algorithm: Uint8Array, signer: Signer): Issuer {
  const tbs = tbsOf(algorithm, label, label, spki, true);
  const der = certificate(tbs, algorithm, bitString(0, signBytes(tbs, privateKey, signer)));
  return { label, privateKey, spki, der, view: parseCertificate(der) };
}

function keys(type: 'P-256' | 'P-384' | 'RSA'): { privateKey: KeyObject; spki: Buffer } {
  const { privateKey, publicKey } =
    type === 'RSA'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: type });
  return { privateKey, spki: publicKey.export({ type: 'spki', format: 'der' }) };
}

let p256: Issuer;
let p384: Issuer;
let rsa: Issuer;
/** The RSA key of `rsa` with an id-RSASSA-PSS SubjectPublicKeyInfo: a key Node types 'rsa-pss'. */
let rsaAsPss: Issuer;
/** Another P-256 key under the same subject as `p256`: a wrong issuer that names the right one. */
let p256Twin: Issuer;
let issuers: Issuer[];

beforeAll(() => {
  const a = keys('P-256');
  p256 = issuer('P-256 CA', a.privateKey, a.spki, ALG.ecdsaSha256, 'sha256');
  const b = keys('P-384');
  p384 = issuer('P-384 CA', b.privateKey, b.spki, ALG.ecdsaSha384, 'sha384');
  const c = keys('RSA');
  rsa = issuer('RSA CA', c.privateKey, c.spki, ALG.rsaSha256, 'sha256');
  // An RSA SPKI is SEQUENCE(4 bytes) AlgorithmIdentifier(15 bytes) BIT STRING: keep the BIT STRING, name it PSS.
  const pssSpki = seq(hex('300b06092a864886f70d01010a'), c.spki.subarray(19));
  rsaAsPss = issuer('RSA-PSS CA', c.privateKey, pssSpki, ALG.rsaSha256, 'sha256');
  const d = keys('P-256');
  p256Twin = issuer('P-256 CA', d.privateKey, d.spki, ALG.ecdsaSha256, 'sha256');
  issuers = [p256, p384, rsa, rsaAsPss, p256Twin];
});

/** A leaf of `by`: the tbs `signature` field and the outer `signatureAlgorithm` given apart, signed with `signer`. */
function leaf(
  by: Issuer,
  options: { tbsAlgorithm: Uint8Array; algorithm?: Uint8Array; signer: Signer; key?: KeyObject },
): { tbs: Buffer; algorithm: Uint8Array; signature: Buffer } {
  const subject = keys('P-256');
  const tbs = tbsOf(options.tbsAlgorithm, by.label, 'leaf', subject.spki, false);
  return {
    tbs,
    algorithm: options.algorithm ?? options.tbsAlgorithm,
    signature: signBytes(tbs, options.key ?? by.privateKey, options.signer),
  };
}

const nodeKeys = new Map<Issuer, KeyObject>();

/** Node's answer: OpenSSL's parse of both certificates (the embedded-PEM guard applied), then X509_verify. */
function nodeAnswer(der: Uint8Array, by: Issuer): boolean {
  try {
    const cert = new X509Certificate(der);
    if (!cert.raw.equals(der)) return false;
    return cert.verify(nodeKeys.get(by) ?? nodeKeys.set(by, new X509Certificate(by.der).publicKey).get(by)!);
  } catch {
    return false;
  }
}

/** signedBy's answer, as verifyX509SvidSync's findIssuer takes it (a throw is "not the issuer"). */
function ourAnswer(der: Uint8Array, by: Issuer): boolean {
  try {
    return signedBy(parseCertificate(der), by.view);
  } catch {
    return false;
  }
}

interface Case {
  readonly label: string;
  readonly der: Buffer;
  /** The issuer whose key signed it, if any. */
  readonly by?: Issuer;
}

/** Compares both answers for every case against every issuer; returns how many were true. */
function differential(
  cases: readonly Case[],
  against: (each: Case) => readonly Issuer[] = () => issuers,
): { compared: number; verified: number } {
  let compared = 0;
  let verified = 0;
  for (const each of cases) {
    const { label, der } = each;
    for (const by of against(each)) {
      const expected = nodeAnswer(der, by);
      expect(ourAnswer(der, by), `${label}, against ${by.label} (${by === p256Twin ? 'twin' : 'own key'})`).toBe(
        expected,
      );
      compared++;
      if (expected) verified++;
    }
  }
  return { compared, verified };
}

const SIGNERS: Array<[Issuer, Uint8Array, Signer]> = [];
beforeAll(() => {
  SIGNERS.push(
    [p256, ALG.ecdsaSha256, 'sha256'],
    [p256, ALG.ecdsaSha384, 'sha384'],
    [p256, ALG.ecdsaSha512, 'sha512'],
    [p384, ALG.ecdsaSha256, 'sha256'],
    [p384, ALG.ecdsaSha384, 'sha384'],
    [p384, ALG.ecdsaSha512, 'sha512'],
    [rsa, ALG.rsaSha256, 'sha256'],
    [rsa, ALG.rsaSha384, 'sha384'],
    [rsa, ALG.rsaSha512, 'sha512'],
  );
});

/** The same certificate with bit `bit` of byte `at` flipped. */
function flipped(der: Buffer, at: number, bit: number): Buffer {
  const copy = Buffer.from(der);
  copy[at] = (copy[at] as number) ^ (1 << bit);
  return copy;
}

/** An ECDSA-Sig-Value's r and s contents. */
function ecdsaParts(signature: Buffer): [Buffer, Buffer] {
  let at = signature[1] === 0x81 ? 3 : 2;
  const rLength = signature[at + 1] as number;
  const r = signature.subarray(at + 2, at + 2 + rLength);
  at += 2 + rLength;
  const s = signature.subarray(at + 2, at + 2 + (signature[at + 1] as number));
  return [r, s];
}

describe('signedBy answers what Node (OpenSSL X509_verify) answers', () => {
  it('for leaves of every table algorithm, against their issuer and every other one', () => {
    const cases: Case[] = issuers.map((each) => ({ label: `${each.label} itself`, der: each.der }));
    for (const [by, algorithm, signer] of SIGNERS) {
      const { tbs, signature } = leaf(by, { tbsAlgorithm: algorithm, signer });
      cases.push({ label: `${by.label} ${signer}`, der: certificate(tbs, algorithm, bitString(0, signature)) });
    }
    const { compared, verified } = differential(cases);
    // Each leaf verifies against its issuer only; the self-signed CAs against themselves (and PSS's against RSA's).
    expect(compared).toBe(cases.length * issuers.length);
    expect(verified).toBeGreaterThanOrEqual(SIGNERS.length + 4);
  });

  it('for every single-bit flip of the signature, and of bytes across the tbsCertificate', () => {
    const cases: Case[] = [];
    for (const [by, algorithm, signer] of [SIGNERS[0], SIGNERS[4], SIGNERS[6]] as Array<[Issuer, Uint8Array, Signer]>) {
      const { tbs, signature } = leaf(by, { tbsAlgorithm: algorithm, signer });
      const der = certificate(tbs, algorithm, bitString(0, signature));
      const signatureStart = der.length - signature.length;
      for (let at = signatureStart; at < der.length; at++) {
        for (let bit = 0; bit < 8; bit++)
          cases.push({ label: `${signer} byte ${at} bit ${bit}`, der: flipped(der, at, bit), by });
      }
      // The tbsCertificate's bytes: every 9th, each bit (structure, names, validity, key).
      const tbsStart = der.indexOf(tbs);
      for (let at = tbsStart; at < tbsStart + tbs.length; at += 9) {
        for (let bit = 0; bit < 8; bit++)
          cases.push({ label: `tbs byte ${at} bit ${bit}`, der: flipped(der, at, bit), by });
      }
    }
    // Against the key that signed the certificate (the other keys are the other tests' business).
    const { compared, verified } = differential(cases, (each) => [each.by as Issuer]);
    expect(compared).toBeGreaterThan(3500);
    expect(verified).toBe(0);
  });

  it('when signatureAlgorithm and the tbsCertificate signature field differ, or carry other parameters', () => {
    const cases: Case[] = [];
    const variants: Array<[string, Issuer, Uint8Array, Uint8Array, Signer]> = [
      // [label, issuer, tbs signature field, outer signatureAlgorithm, what signs]
      ['outer ecdsa-sha256, tbs ecdsa-sha384, signed sha256', p256, ALG.ecdsaSha384, ALG.ecdsaSha256, 'sha256'],
      ['outer ecdsa-sha256, tbs ecdsa-sha384, signed sha384', p256, ALG.ecdsaSha384, ALG.ecdsaSha256, 'sha384'],
      ['outer rsa-sha256, tbs rsa-sha512, signed sha256', rsa, ALG.rsaSha512, ALG.rsaSha256, 'sha256'],
      ['outer rsa-sha256, tbs ecdsa-sha256, signed sha256', rsa, ALG.ecdsaSha256, ALG.rsaSha256, 'sha256'],
      ['outer ecdsa-sha256, tbs with NULL parameters', p256, ALG.ecdsaSha256NullParams, ALG.ecdsaSha256, 'sha256'],
      ['outer with NULL parameters, tbs without', p256, ALG.ecdsaSha256, ALG.ecdsaSha256NullParams, 'sha256'],
      [
        'ecdsa-sha256 with NULL parameters in both',
        p256,
        ALG.ecdsaSha256NullParams,
        ALG.ecdsaSha256NullParams,
        'sha256',
      ],
      ['rsa-sha256 without parameters in both', rsa, ALG.rsaSha256NoParams, ALG.rsaSha256NoParams, 'sha256'],
      ['outer rsa-sha256 without parameters, tbs with NULL', rsa, ALG.rsaSha256, ALG.rsaSha256NoParams, 'sha256'],
      ['outer rsa-sha256 with NULL, tbs without', rsa, ALG.rsaSha256NoParams, ALG.rsaSha256, 'sha256'],
    ];
    for (const [label, by, tbsAlgorithm, algorithm, signer] of variants) {
      const { tbs, signature } = leaf(by, { tbsAlgorithm, algorithm, signer });
      cases.push({ label, der: certificate(tbs, algorithm, bitString(0, signature)) });
    }
    differential(cases);
    // What the fallback answers: OpenSSL ignores the parameters of these algorithms, but not a disagreement.
    const [mismatch, , , , , , ecdsaNull, rsaNoParams] = cases as [Case, ...Case[]];
    expect(ourAnswer(mismatch.der, p256)).toBe(false);
    expect(ourAnswer((ecdsaNull as Case).der, p256)).toBe(nodeAnswer((ecdsaNull as Case).der, p256));
    expect(ourAnswer((rsaNoParams as Case).der, rsa)).toBe(true);
  });

  it('for a signature made with the key type the algorithm does not name', () => {
    // ecdsa-with-SHA256 over an RSA PKCS #1 signature checked with the RSA key, and the reverse: crypto.verify would
    // accept both (it takes the scheme from the key); OpenSSL refuses a key that is not the algorithm's.
    const cases: Case[] = [];
    {
      const { tbs, signature } = leaf(rsa, { tbsAlgorithm: ALG.ecdsaSha256, signer: 'sha256' });
      cases.push({
        label: 'ecdsa-sha256 signed by the RSA key',
        der: certificate(tbs, ALG.ecdsaSha256, bitString(0, signature)),
      });
    }
    {
      const { tbs, signature } = leaf(p256, { tbsAlgorithm: ALG.rsaSha256, signer: 'sha256' });
      cases.push({
        label: 'rsa-sha256 signed by the P-256 key',
        der: certificate(tbs, ALG.rsaSha256, bitString(0, signature)),
      });
    }
    {
      // PKCS #1 v1.5 by the RSA key whose issuer certificate names it an RSASSA-PSS key.
      const { tbs, signature } = leaf(rsaAsPss, { tbsAlgorithm: ALG.rsaSha256, signer: 'sha256' });
      cases.push({
        label: 'rsa-sha256 by a key typed rsa-pss',
        der: certificate(tbs, ALG.rsaSha256, bitString(0, signature)),
      });
    }
    differential(cases);
    const [ecdsaByRsa, rsaByEc, pkcs1ByPssKey] = cases as [Case, Case, Case];
    expect(ourAnswer(ecdsaByRsa.der, rsa)).toBe(false);
    expect(ourAnswer(rsaByEc.der, p256)).toBe(false);
    expect(ourAnswer(pkcs1ByPssKey.der, rsaAsPss)).toBe(false);
    expect(ourAnswer(pkcs1ByPssKey.der, rsa)).toBe(true); // the same key, named an RSA key
  });

  it('for BIT STRINGs with unused bits, truncated, empty or non-DER signatures', () => {
    const cases: Case[] = [];
    for (const [by, algorithm, signer] of [SIGNERS[0], SIGNERS[4], SIGNERS[6]] as Array<[Issuer, Uint8Array, Signer]>) {
      const { tbs, signature } = leaf(by, { tbsAlgorithm: algorithm, signer });
      const with_ = (label: string, value: Uint8Array): void => {
        cases.push({ label: `${by.label} ${signer}: ${label}`, der: certificate(tbs, algorithm, value) });
      };
      with_('the genuine signature', bitString(0, signature));
      for (let unused = 1; unused <= 8; unused++) with_(`${unused} unused bits`, bitString(unused, signature));
      with_('last byte cut', bitString(0, signature.subarray(0, -1)));
      with_('first byte cut', bitString(0, signature.subarray(1)));
      with_('half the signature', bitString(0, signature.subarray(0, signature.length >> 1)));
      with_('a trailing zero byte', bitString(0, Buffer.concat([signature, Buffer.from([0])])));
      with_('no signature bytes', bitString(0, new Uint8Array(0)));
      with_('an empty BIT STRING', tlv(0x03));
      if (signer !== 'pss' && by !== rsa) {
        const [r, s] = ecdsaParts(signature);
        const int = (bytes: Uint8Array): Buffer => tlv(0x02, bytes);
        with_('r with an extra leading zero', bitString(0, seq(int(Buffer.concat([Buffer.from([0]), r])), int(s))));
        with_('s with an extra leading zero', bitString(0, seq(int(r), int(Buffer.concat([Buffer.from([0]), s])))));
        const body = Buffer.concat([int(r), int(s)]);
        with_(
          'a long-form length below 128',
          bitString(0, Buffer.concat([Buffer.from([0x30, 0x81, body.length]), body])),
        );
        with_('r and s swapped', bitString(0, seq(int(s), int(r))));
        with_('the raw r || s form', bitString(0, Buffer.concat([r.subarray(r.length - (by === p256 ? 32 : 48)), s])));
      }
    }
    const { verified } = differential(cases);
    expect(verified).toBe(3); // the three genuine signatures, each against its own issuer
  });

  it('for RSASSA-PSS, through Node’s check (not in the table)', () => {
    const cases: Case[] = [];
    for (const by of [rsa, rsaAsPss]) {
      const { tbs, signature } = leaf(by, { tbsAlgorithm: ALG.rsaPssSha256, signer: 'pss' });
      const der = certificate(tbs, ALG.rsaPssSha256, bitString(0, signature));
      cases.push({ label: `pss by ${by.label}`, der });
      for (const at of [der.length - 1, der.length - 100])
        cases.push({ label: `pss, byte ${at} flipped`, der: flipped(der, at, 0) });
    }
    differential(cases);
    expect(ourAnswer((cases[0] as Case).der, rsa)).toBe(true);
  });
});

describe('the openssl command agrees', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'sigil-signature-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const pem = (der: Uint8Array): string =>
    `-----BEGIN CERTIFICATE-----\n${Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE-----\n`;

  function opensslVerifies(der: Uint8Array, by: Issuer): boolean {
    writeFileSync(join(dir, 'ca.pem'), pem(by.der));
    writeFileSync(join(dir, 'leaf.pem'), pem(der));
    try {
      execFileSync('openssl', ['verify', '-no_check_time', '-CAfile', join(dir, 'ca.pem'), join(dir, 'leaf.pem')], {
        stdio: 'pipe',
      });
      return true;
    } catch {
      return false;
    }
  }

  it('on genuine, flipped, mismatched, re-parameterized, unused-bit and PSS signatures', () => {
    const rows: Array<[string, Buffer, Issuer]> = [];
    const add = (
      label: string,
      by: Issuer,
      tbsAlgorithm: Uint8Array,
      algorithm: Uint8Array,
      signer: Signer,
      unused = 0,
    ): void => {
      const { tbs, signature } = leaf(by, { tbsAlgorithm, algorithm, signer });
      rows.push([label, certificate(tbs, algorithm, bitString(unused, signature)), by]);
    };
    add('P-256 ecdsa-sha256', p256, ALG.ecdsaSha256, ALG.ecdsaSha256, 'sha256');
    add('P-384 ecdsa-sha384', p384, ALG.ecdsaSha384, ALG.ecdsaSha384, 'sha384');
    add('RSA rsa-sha256', rsa, ALG.rsaSha256, ALG.rsaSha256, 'sha256');
    add('tbs ecdsa-sha384, outer ecdsa-sha256', p256, ALG.ecdsaSha384, ALG.ecdsaSha256, 'sha256');
    add('ecdsa-sha256 with NULL parameters', p256, ALG.ecdsaSha256NullParams, ALG.ecdsaSha256NullParams, 'sha256');
    add('rsa-sha256 without parameters', rsa, ALG.rsaSha256NoParams, ALG.rsaSha256NoParams, 'sha256');
    add('1 unused bit', p256, ALG.ecdsaSha256, ALG.ecdsaSha256, 'sha256', 1);
    add('RSASSA-PSS', rsa, ALG.rsaPssSha256, ALG.rsaPssSha256, 'pss');
    const genuine = rows[0] as [string, Buffer, Issuer];
    rows.push(['P-256 signature bit flipped', flipped(genuine[1], genuine[1].length - 5, 3), p256]);
    rows.push(['P-256 leaf against the twin key', genuine[1], p256Twin]);
    const answers = rows.map(([label, der, by]) => [label, opensslVerifies(der, by), ourAnswer(der, by)]);
    for (const [label, openssl, ours] of answers) expect(ours, String(label)).toBe(openssl);
    expect(answers.map(([, openssl]) => openssl)).toEqual([
      true,
      true,
      true,
      false,
      true,
      true,
      false,
      true,
      false,
      false,
    ]);
  });
});

describe('Node’s certificate, built only when needed', () => {
  /** A certificate of `p256` whose subject Name OpenSSL refuses (an INTEGER where an AttributeTypeAndValue goes). */
  function unreadableByOpenSsl(): Buffer {
    const subject = keys('P-256');
    const tbs = seq(
      tlv(0xa0, hex('020102')),
      hex('020105'),
      ALG.ecdsaSha256,
      name(p256.label),
      seq(tlv(0x17, Buffer.from('200101000000Z')), tlv(0x18, Buffer.from('20991231235959Z'))),
      seq(tlv(0x31, hex('020101'))),
      subject.spki,
    );
    return certificate(tbs, ALG.ecdsaSha256, bitString(0, signBytes(tbs, p256.privateKey, 'sha256')));
  }

  it('is not needed by signedBy for its table algorithms; the issuer key object is made once per view', () => {
    // The lean reader keeps names as bytes: signed by the P-256 CA, it verifies through the table, where Node's
    // certificate is never built.
    const der = unreadableByOpenSsl();
    const view = parseCertificate(der);
    expect(() => new X509Certificate(der)).toThrow();
    expect(() => view.node).toThrow();
    const issuerView = parseCertificate(p256.der);
    expect(signedBy(view, issuerView)).toBe(true);
    expect(issuerView.publicKey).toBe(issuerView.publicKey);
    expect(issuerView.publicKey?.asymmetricKeyType).toBe('ec');
    expect((issuerView.publicKey as KeyObject).export({ type: 'spki', format: 'der' })).toEqual(p256.spki);
  });

  it('is still built for every bundle authority: a bundle refuses one OpenSSL cannot read, as before', () => {
    const td = TrustDomain.parse('example.org');
    expect(() => TrustBundle.create(td, { x509Authorities: [unreadableByOpenSsl()] })).toThrow(
      'x509 authority 0 is not a der x.509 certificate',
    );
    expect(TrustBundle.create(td, { x509Authorities: [p256.der] }).x509Authorities).toHaveLength(1);
  });
});
