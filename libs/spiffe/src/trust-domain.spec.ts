import { describe, expect, it } from 'vitest';
import { SpiffeError, TrustDomain } from './index.js';

function failure(input: string): SpiffeError {
  try {
    TrustDomain.parse(input);
  } catch (error) {
    expect(error).toBeInstanceOf(SpiffeError);
    return error as SpiffeError;
  }
  throw new Error('expected a SpiffeError');
}

describe('TrustDomain.parse', () => {
  it.each([
    ['example.org', 'example.org'],
    ['Example.ORG', 'example.org'],
    ['a', 'a'],
    ['trust_domain-name.example.com', 'trust_domain-name.example.com'],
    ['10.0.0.1', '10.0.0.1'],
    ['spiffe://example.org', 'example.org'],
    ['spiffe://Example.org/some/path', 'example.org'],
    ['SPIFFE://EXAMPLE.ORG', 'example.org'],
    ['a'.repeat(255), 'a'.repeat(255)],
  ])('accepts %s', (input, name) => {
    const td = TrustDomain.parse(input);
    expect(td.name).toBe(name);
    expect(td.toString()).toBe(name);
    expect(td.idString()).toBe(`spiffe://${name}`);
    expect(td.id().toString()).toBe(`spiffe://${name}`);
    expect(td.id().isRoot()).toBe(true);
    expect(td.equals(TrustDomain.parse(name))).toBe(true);
  });

  it.each([
    ['', 'trust domain is missing'],
    ['example.org:8080', 'trust domain must not contain a port'],
    ['user@example.org', 'trust domain must not contain user info'],
    ['ex%41mple.org', 'trust domain must not contain percent-encoded characters'],
    ['example.org/path', 'trust domain characters are limited to'],
    ['exa mple.org', 'trust domain characters are limited to'],
    ['éxample.org', 'trust domain characters are limited to'],
    ['a'.repeat(256), 'trust domain must be at most 255 bytes'],
    ['spiffe://', 'trust domain is missing'],
    ['spiffe://example.org/', 'path must not end with a slash'],
    ['spiffe://example.org:1/a', 'trust domain must not contain a port'],
    ['http://example.org', 'scheme must be "spiffe"'],
    ['spiffe://example.org/a?b', 'query is not allowed'],
  ])('rejects %j', (input, rule) => {
    const error = failure(input);
    expect(error.code).toBe('ERR_TRUST_DOMAIN_INVALID');
    expect(error.message).toContain(rule);
  });

  it('compares by name and serialises to it', () => {
    expect(TrustDomain.parse('example.org').equals(TrustDomain.parse('example.com'))).toBe(false);
    expect(JSON.stringify([TrustDomain.parse('Example.org')])).toBe('["example.org"]');
  });
});
