import { createRootCa, exportPublicKeySpki, generateKeyPair } from '@sigil/pki';
import { SpiffeError, TrustBundle, TrustDomain, parseAndValidateJwtSvid, parseInsecureJwtSvid } from '@sigil/spiffe';
import { KeyObject, sign } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentConfigError, loadAgentConfig } from '../../apps/agent/src/config.js';
import { ConfigError, loadServerConfig } from '../../apps/server/src/config.js';

// Counterexamples `npm run fuzz` found, kept as regression tests of the parser fixes.

const NOW = new Date('2030-01-01T00:00:00Z');
const b64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('JWT-SVID header and claim values of the wrong type', () => {
  let bundle: TrustBundle;
  let privateKey: KeyObject;
  const token = (header: unknown, claims: unknown): string => {
    const input = `${b64url(header)}.${b64url(claims)}`;
    const signature = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
    return `${input}.${signature.toString('base64url')}`;
  };
  const claims = { sub: 'spiffe://example.org/web', aud: 'aud', exp: NOW.getTime() / 1000 + 300 };

  beforeAll(async () => {
    const keys = await generateKeyPair('ec-p256');
    privateKey = KeyObject.from(keys.privateKey);
    const jwk = KeyObject.from(keys.publicKey).export({ format: 'jwk' });
    bundle = TrustBundle.create(TrustDomain.parse('example.org'), { jwtAuthorities: [['kid-1', jwk]] });
  });

  const refusals = (text: string) => [
    () => parseAndValidateJwtSvid(text, bundle, 'aud', { now: NOW }),
    async () => parseInsecureJwtSvid(text, 'aud', { now: NOW }),
  ];

  it.each([
    ['alg', { alg: { toString: null }, kid: 'kid-1', typ: 'JWT' }, /^token alg an object is not allowed/],
    ['typ', { alg: 'ES256', kid: 'kid-1', typ: { toString: null } }, /^token typ an object must be JWT or JOSE$/],
    ['typ', { alg: 'ES256', kid: 'kid-1', typ: ['JWT'] }, /^token typ an array must be JWT or JOSE$/],
  ])('refuses a header %s that is not a string with SpiffeError (was a TypeError)', async (_field, header, message) => {
    for (const call of refusals(token(header, claims))) {
      await expect(call()).rejects.toSatisfy(
        (error: unknown) =>
          error instanceof SpiffeError && error.code === 'ERR_JWT_SVID_INVALID' && message.test(error.message),
      );
    }
  });

  it('refuses a kid that is not a string with SpiffeError (was a TypeError)', async () => {
    const text = token({ alg: 'ES256', kid: { length: 100 }, typ: 'JWT' }, claims);
    await expect(parseAndValidateJwtSvid(text, bundle, 'aud', { now: NOW })).rejects.toThrow(
      new SpiffeError('ERR_JWT_SVID_INVALID', 'token header kid must be a string'),
    );
  });
});

describe('JWT-SVID times outside the range of dates', () => {
  const exp = NOW.getTime() / 1000 + 300;
  const unsigned = (claims: Record<string, unknown>): string =>
    `${b64url({ alg: 'ES256', kid: 'kid-1', typ: 'JWT' })}.${b64url({ sub: 'spiffe://example.org/web', aud: 'aud', exp, ...claims })}.AA`;

  it.each([
    ['exp', { exp: -1e308 }, 'token exp claim must be a time (seconds since the epoch) within the range of dates'],
    ['exp', { exp: 1e308 }, 'token exp claim must be a time (seconds since the epoch) within the range of dates'],
    ['nbf', { nbf: 1e308 }, 'token nbf claim must be a time (seconds since the epoch) within the range of dates'],
    ['nbf', { nbf: 'soon' }, 'token nbf claim must be a time (seconds since the epoch) within the range of dates'],
    ['iat', { iat: 1e308 }, 'token iat claim must be a time (seconds since the epoch) within the range of dates'],
  ])('refuses %s %j with SpiffeError (was a RangeError, or an Invalid Date accepted)', (_claim, claims, message) => {
    expect(() => parseInsecureJwtSvid(unsigned(claims), 'aud', { now: NOW })).toThrow(
      new SpiffeError('ERR_JWT_SVID_INVALID', message),
    );
  });

  it('still accepts the last representable expiry', () => {
    expect(parseInsecureJwtSvid(unsigned({ exp: 8.64e12 }), 'aud', { now: NOW }).expiry.getTime()).toBe(8.64e15);
  });
});

describe('config files with a deeply nested value', () => {
  let dir: string;
  const deep = (depth: number): string => `${'['.repeat(depth)}1${']'.repeat(depth)}`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-fuzz-regression-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('the agent names the key with AgentConfigError (was a RangeError from JSON.stringify)', async () => {
    const file = join(dir, 'agent.json');
    await writeFile(file, `{"server_address":${deep(20_000)},"insecure_bootstrap":true}`);
    expect(() => loadAgentConfig({ file, env: {}, cwd: dir })).toThrow(
      new AgentConfigError([
        "server_address: must be HOST:PORT or a comma-separated list of them, got 'an array nested too deeply to show'",
      ]),
    );
  });

  it('the server names the key with ConfigError (was a RangeError from JSON.stringify)', async () => {
    const file = join(dir, 'server.json');
    await writeFile(file, `{"port":${deep(20_000)}}`);
    expect(() => loadServerConfig({ file, env: {}, cwd: dir })).toThrow(
      new ConfigError(["port: must be a port number from 0 to 65535, got 'an array nested too deeply to show'"]),
    );
  });

  it('still shows a shallow value as JSON', async () => {
    const file = join(dir, 'shallow.json');
    await writeFile(file, '{"port":[1,2]}');
    expect(() => loadServerConfig({ file, env: {}, cwd: dir })).toThrow(
      new ConfigError(["port: must be a port number from 0 to 65535, got '[1,2]'"]),
    );
  });
});

describe('config files with a null value', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-fuzz-regression-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('the server refuses it with ConfigError (was a TypeError from path.isAbsolute(null))', async () => {
    const file = join(dir, 'server.json');
    await writeFile(file, '{"upstream_ca_cert_file":null,"upstream_ca_key_file":"ca.key"}');
    expect(() => loadServerConfig({ file, env: {}, cwd: dir })).toThrow(
      new ConfigError([
        `upstream_ca_cert_file: must not be null in config file ${file} (leave the key out for the default)`,
      ]),
    );
  });

  it.each([
    [
      'x509pop_cert_file',
      '{"server_address":"a:1","insecure_bootstrap":true,"x509pop_cert_file":null,"x509pop_key_file":"k"}',
    ],
    ['trust_domain', '{"server_address":"a:1","insecure_bootstrap":true,"trust_domain":null}'],
  ])('the agent refuses a null %s with AgentConfigError (was a TypeError or a SpiffeError)', async (key, text) => {
    const file = join(dir, 'agent.json');
    await writeFile(file, text);
    expect(() => loadAgentConfig({ file, env: {}, cwd: dir })).toThrow(
      new AgentConfigError([`${key}: must not be null in config file ${file} (leave the key out for the default)`]),
    );
  });
});

describe('agent config file keys named like Object.prototype members', () => {
  it('reports them as unknown keys (the `in` check took them for known ones)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sigil-fuzz-regression-'));
    try {
      const file = join(dir, 'agent.json');
      await writeFile(file, '{"server_address":"a:1","insecure_bootstrap":true,"constructor":1}');
      expect(() => loadAgentConfig({ file, env: {}, cwd: dir })).toThrow(
        new AgentConfigError([`constructor: unknown key in config file ${file}`]),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('trust bundle authorities whose public key cannot be read', () => {
  it('are refused when parsed, not accepted and then failing in toJwks (was a plain Error from createPublicKey)', async () => {
    const td = TrustDomain.parse('example.org');
    const keys = await generateKeyPair('ec-p256');
    const ca = await createRootCa({ trustDomain: td, keys, now: new Date() });
    // Flip the last byte of the EC point: @peculiar/x509 still parses the certificate, the point is off the curve.
    const spki = exportPublicKeySpki(keys.publicKey);
    const at = Buffer.from(ca.der).indexOf(Buffer.from(spki)) + spki.length - 1;
    const der = Uint8Array.from(ca.der);
    der[at] = (der[at] as number) ^ 0x01;
    const base64 = Buffer.from(der).toString('base64');
    const pem = `-----BEGIN CERTIFICATE-----\n${base64}\n-----END CERTIFICATE-----\n`;
    const refusal = (error: unknown) =>
      error instanceof SpiffeError && error.code === 'ERR_BUNDLE_INVALID' && /public key/.test(error.message);
    for (const parse of [
      () => TrustBundle.fromX509Der(td, der),
      () => TrustBundle.fromX509Pem(td, pem),
      () => TrustBundle.parseJwks(td, { keys: [{ use: 'x509-svid', kty: 'EC', x5c: [base64] }] }),
      () => TrustBundle.create(td, { x509Authorities: [der] }),
    ]) {
      expect(parse).toThrow(expect.toSatisfy(refusal));
    }
  });
});
