import { describe, expect, it } from 'vitest';
import { SpiffeError, SpiffeId, TrustDomain } from './index.js';

const TD_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789.-_';
const PATH_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_';

function codeOf(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(SpiffeError);
    return { code: (error as SpiffeError).code, message: (error as SpiffeError).message };
  }
  throw new Error('expected a SpiffeError');
}

// Every ASCII character outside the allowed set for trust domains (§2.1) except the URI delimiters, which have
// their own rules and cases below.
const badTrustDomainChars = Array.from({ length: 128 }, (_, i) => String.fromCharCode(i)).filter(
  (c) => !TD_CHARS.includes(c) && !/[A-Z/?#@:%]/.test(c),
);
const badPathChars = Array.from({ length: 128 }, (_, i) => String.fromCharCode(i)).filter(
  (c) => !PATH_CHARS.includes(c) && !/[/?#%]/.test(c),
);

describe('SpiffeId.parse accepts valid ids', () => {
  it.each([
    ['spiffe://example.org', 'spiffe://example.org', 'example.org', ''],
    ['spiffe://example.org/workload', 'spiffe://example.org/workload', 'example.org', '/workload'],
    ['spiffe://example.org/ns/prod/sa/web', 'spiffe://example.org/ns/prod/sa/web', 'example.org', '/ns/prod/sa/web'],
    [`spiffe://${TD_CHARS}/${PATH_CHARS}`, `spiffe://${TD_CHARS}/${PATH_CHARS}`, TD_CHARS, `/${PATH_CHARS}`],
    ['spiffe://192.168.1.1/x', 'spiffe://192.168.1.1/x', '192.168.1.1', '/x'],
    ['spiffe://a/b', 'spiffe://a/b', 'a', '/b'],
    ['spiffe://_-.-_/..a/a../...', 'spiffe://_-.-_/..a/a../...', '_-.-_', '/..a/a../...'],
    // SPIFFE-ID.md §2.4: scheme and trust domain are case-insensitive (normalised), the path is case-sensitive.
    ['SPIFFE://example.org/Web', 'spiffe://example.org/Web', 'example.org', '/Web'],
    ['Spiffe://Example.Org/Web', 'spiffe://example.org/Web', 'example.org', '/Web'],
    ['spiffe://EXAMPLE.ORG/PATH/Mixed', 'spiffe://example.org/PATH/Mixed', 'example.org', '/PATH/Mixed'],
    ['sPiFfE://ExAmPlE.oRg', 'spiffe://example.org', 'example.org', ''],
  ])('%s', (input, expected, trustDomain, path) => {
    const id = SpiffeId.parse(input);
    expect(id.toString()).toBe(expected);
    expect(id.trustDomain.name).toBe(trustDomain);
    expect(id.path).toBe(path);
    expect(id.isRoot()).toBe(path === '');
    expect(SpiffeId.parse(id.toString()).equals(id)).toBe(true);
  });
});

describe('SpiffeId.parse in runs of trust domains', () => {
  it('gives each id its own trust domain when they alternate, and checks each new one', () => {
    const names = ['a.example', 'b.example', 'a.example', 'EXAMPLE.org', 'example.org'];
    expect(names.map((name) => SpiffeId.parse(`spiffe://${name}/w`).trustDomain.name)).toEqual([
      'a.example',
      'b.example',
      'a.example',
      'example.org',
      'example.org',
    ]);
    SpiffeId.parse('spiffe://example.org/w');
    expect(codeOf(() => SpiffeId.parse('spiffe://example.org:1/w')).message).toContain('must not contain a port');
    expect(codeOf(() => SpiffeId.parse('spiffe://example.org/w/..')).message).toContain('dot segments');
    expect(SpiffeId.parse('spiffe://example.org/w').equals(SpiffeId.parse('spiffe://Example.ORG/w'))).toBe(true);
  });
});

describe('SpiffeId.parse rejects ids that break the standard', () => {
  it.each([
    ['', 'cannot be empty'],
    ['example.org/workload', 'scheme "spiffe" is missing'],
    ['//example.org/workload', 'scheme "spiffe" is missing'],
    ['/workload', 'scheme "spiffe" is missing'],
    [':/example.org', 'scheme "spiffe" is missing'],
    ['http://example.org/workload', 'scheme must be "spiffe"'],
    ['https://example.org', 'scheme must be "spiffe"'],
    ['spiffes://example.org', 'scheme must be "spiffe"'],
    ['spif://example.org', 'scheme must be "spiffe"'],
    ['spiffe:example.org/workload', 'scheme "spiffe:" must be followed by "//"'],
    ['spiffe:/example.org/workload', 'scheme "spiffe:" must be followed by "//"'],
    ['spiffe:', 'scheme "spiffe:" must be followed by "//"'],
    ['spiffe://', 'trust domain is missing'],
    ['spiffe:///workload', 'trust domain is missing'],
    ['spiffe:////', 'trust domain is missing'],
    ['spiffe://example.org:8080/workload', 'must not contain a port'],
    ['spiffe://example.org:/workload', 'must not contain a port'],
    ['spiffe://example.org:8080', 'must not contain a port'],
    ['spiffe://[::1]/workload', 'must not contain a port'],
    ['spiffe://user@example.org/workload', 'must not contain user info'],
    ['spiffe://user:password@example.org/workload', 'must not contain user info'],
    ['spiffe://@example.org', 'must not contain user info'],
    ['spiffe://example%2Eorg/workload', 'trust domain must not contain percent-encoded characters'],
    ['spiffe://%65xample.org', 'trust domain must not contain percent-encoded characters'],
    ['spiffe://exa mple.org', 'trust domain characters are limited to'],
    ['spiffe://exämple.org', 'trust domain characters are limited to'],
    ['spiffe://example.org\u212A/x', 'trust domain characters are limited to'],
    ['spiffe://example.org/workload?query=1', 'query is not allowed'],
    ['spiffe://example.org?x', 'query is not allowed'],
    ['spiffe://example.org/workload?#fragment', 'query is not allowed'],
    ['spiffe://example.org/workload#fragment', 'fragment is not allowed'],
    ['spiffe://example.org#fragment', 'fragment is not allowed'],
    ['spiffe://example.org/', 'path must not end with a slash'],
    ['spiffe://example.org/workload/', 'path must not end with a slash'],
    ['spiffe://example.org//', 'path must not end with a slash'],
    ['spiffe://example.org//workload', 'path must not contain empty segments'],
    ['spiffe://example.org/a//b', 'path must not contain empty segments'],
    ['spiffe://example.org/.', 'path must not contain dot segments'],
    ['spiffe://example.org/..', 'path must not contain dot segments'],
    ['spiffe://example.org/a/./b', 'path must not contain dot segments'],
    ['spiffe://example.org/a/../b', 'path must not contain dot segments'],
    ['spiffe://example.org/a/..', 'path must not contain dot segments'],
    ['spiffe://example.org/work%20load', 'path must not contain percent-encoded characters'],
    ['spiffe://example.org/%2e%2e', 'path must not contain percent-encoded characters'],
    ['spiffe://example.org/work load', 'path segment characters are limited to'],
    ['spiffe://example.org/wörk', 'path segment characters are limited to'],
    ['spiffe://example.org/pa:th', 'path segment characters are limited to'],
    ['spiffe://example.org/pa@th', 'path segment characters are limited to'],
    ['spiffe://example.org/spiffe://example.org/x', 'path segment characters are limited to'],
    ['spiffe://example.org/p!a$t&h', 'path segment characters are limited to'],
    ['spiffe://example.org/elem[ent', 'path segment characters are limited to'],
  ])('%s', (input, rule) => {
    const { code, message } = codeOf(() => SpiffeId.parse(input));
    expect(code).toBe('ERR_SPIFFE_ID_INVALID');
    expect(message).toContain(rule);
    expect(message).toMatch(/^[a-z]/);
    expect(message).not.toMatch(/\.$/);
  });

  it.each(badTrustDomainChars.map((c) => [JSON.stringify(c), c]))('trust domain character %s', (_, c) => {
    const { code, message } = codeOf(() => SpiffeId.parse(`spiffe://exa${c}mple.org/workload`));
    expect(code).toBe('ERR_SPIFFE_ID_INVALID');
    expect(message).toContain(
      'trust domain characters are limited to lowercase letters, digits, dots, dashes and underscores',
    );
  });

  it.each(badPathChars.map((c) => [JSON.stringify(c), c]))('path character %s', (_, c) => {
    const { code, message } = codeOf(() => SpiffeId.parse(`spiffe://example.org/wo${c}rk`));
    expect(code).toBe('ERR_SPIFFE_ID_INVALID');
    expect(message).toContain('path segment characters are limited to letters, digits, dots, dashes and underscores');
  });
});

describe('SpiffeId length limits (SPIFFE-ID.md §2.3)', () => {
  const prefix = 'spiffe://example.org/';

  it('accepts an id of exactly 2048 bytes and rejects 2049', () => {
    const exact = prefix + 'a'.repeat(2048 - prefix.length);
    expect(SpiffeId.parse(exact).toString()).toHaveLength(2048);
    const { code, message } = codeOf(() => SpiffeId.parse(`${exact}b`));
    expect(code).toBe('ERR_SPIFFE_ID_INVALID');
    expect(message).toContain('must be at most 2048 bytes');
  });

  it('counts bytes, not characters: 1,100 two-byte characters are over the limit', () => {
    const id = `${prefix}${'\u00e9'.repeat(1100)}`;
    expect(id.length).toBeLessThan(2048);
    expect(codeOf(() => SpiffeId.parse(id)).message).toContain('must be at most 2048 bytes');
    // Under the byte limit, the same characters are refused for what they are.
    expect(codeOf(() => SpiffeId.parse(`${prefix}${'\u00e9'.repeat(1000)}`)).message).toContain(
      'path segment characters are limited to',
    );
  });

  it('applies the same limit to fromPath and fromSegments', () => {
    const td = TrustDomain.parse('example.org');
    const room = 2048 - 'spiffe://example.org/'.length;
    expect(SpiffeId.fromPath(td, `/${'a'.repeat(room)}`).toString()).toHaveLength(2048);
    expect(codeOf(() => SpiffeId.fromPath(td, `/${'a'.repeat(room + 1)}`)).message).toContain(
      'must be at most 2048 bytes',
    );
    expect(codeOf(() => SpiffeId.fromSegments(td, 'a'.repeat(room + 1))).message).toContain(
      'must be at most 2048 bytes',
    );
  });

  it('accepts a trust domain of 255 bytes and rejects 256', () => {
    const td255 = 'a'.repeat(255);
    expect(SpiffeId.parse(`spiffe://${td255}/x`).trustDomain.name).toBe(td255);
    const { code, message } = codeOf(() => SpiffeId.parse(`spiffe://${td255}a/x`));
    expect(code).toBe('ERR_SPIFFE_ID_INVALID');
    expect(message).toContain('trust domain must be at most 255 bytes');
  });

  it('keeps the quoted input in an error message short', () => {
    const { message } = codeOf(() => SpiffeId.parse(`${prefix}${'a'.repeat(5000)}`));
    expect(message.length).toBeLessThan(200);
  });
});

describe('SpiffeId.fromPath', () => {
  const td = TrustDomain.parse('example.org');

  it.each([
    ['', 'spiffe://example.org'],
    ['/a', 'spiffe://example.org/a'],
    ['/Upper/Case', 'spiffe://example.org/Upper/Case'],
    ['/a.b/c-d/e_f', 'spiffe://example.org/a.b/c-d/e_f'],
  ])('accepts %j', (path, expected) => {
    const id = SpiffeId.fromPath(td, path);
    expect(id.toString()).toBe(expected);
    expect(id.path).toBe(path);
    expect(id.isMemberOf(td)).toBe(true);
  });

  it.each([
    ['a/b', 'path must start with a slash'],
    ['/', 'path must not end with a slash'],
    ['/a/', 'path must not end with a slash'],
    ['//a', 'path must not contain empty segments'],
    ['/./a', 'path must not contain dot segments'],
    ['/a/..', 'path must not contain dot segments'],
    ['/a%2Fb', 'path must not contain percent-encoded characters'],
    ['/a?b', 'path segment characters are limited to'],
    ['/a#b', 'path segment characters are limited to'],
    ['/a b', 'path segment characters are limited to'],
  ])('rejects %j', (path, rule) => {
    const { code, message } = codeOf(() => SpiffeId.fromPath(td, path));
    expect(code).toBe('ERR_SPIFFE_ID_INVALID');
    expect(message).toContain(`invalid path ${JSON.stringify(path)}: ${rule}`);
  });
});

describe('SpiffeId.fromSegments', () => {
  const td = TrustDomain.parse('example.org');

  it.each([
    [[], 'spiffe://example.org'],
    [['a'], 'spiffe://example.org/a'],
    [['ns', 'Prod', 'sa', 'web-1'], 'spiffe://example.org/ns/Prod/sa/web-1'],
    [['...'], 'spiffe://example.org/...'],
  ])('accepts %j', (segments, expected) => {
    expect(SpiffeId.fromSegments(td, ...segments).toString()).toBe(expected);
  });

  it.each([
    [[''], 'path must not contain empty segments'],
    [['a', ''], 'path must not contain empty segments'],
    [['.'], 'path must not contain dot segments'],
    [['..'], 'path must not contain dot segments'],
    [['a/b'], 'path segment characters are limited to'],
    [['%41'], 'path must not contain percent-encoded characters'],
    [['a:b'], 'path segment characters are limited to'],
  ])('rejects %j', (segments, rule) => {
    const { code, message } = codeOf(() => SpiffeId.fromSegments(td, ...segments));
    expect(code).toBe('ERR_SPIFFE_ID_INVALID');
    expect(message).toContain(rule);
  });
});

describe('SpiffeId comparisons', () => {
  it('compares trust domain case-insensitively and path case-sensitively', () => {
    expect(SpiffeId.parse('spiffe://EXAMPLE.org/a').equals(SpiffeId.parse('spiffe://example.org/a'))).toBe(true);
    expect(SpiffeId.parse('spiffe://example.org/A').equals(SpiffeId.parse('spiffe://example.org/a'))).toBe(false);
    expect(SpiffeId.parse('spiffe://example.org/a').equals(SpiffeId.parse('spiffe://example.com/a'))).toBe(false);
  });

  it('tells membership of a trust domain', () => {
    const id = SpiffeId.parse('spiffe://example.org/a');
    expect(id.isMemberOf(TrustDomain.parse('example.org'))).toBe(true);
    expect(id.isMemberOf(TrustDomain.parse('other.example.org'))).toBe(false);
  });

  it('serialises to its string in JSON', () => {
    expect(JSON.stringify({ id: SpiffeId.parse('spiffe://example.org/a') })).toBe('{"id":"spiffe://example.org/a"}');
  });
});
