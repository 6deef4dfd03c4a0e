import { SpiffeId, TrustBundle, TrustDomain } from '@sigil/spiffe';
import { describe, expect, it } from 'vitest';
import { encodeGrpcMessage } from './grpc-message.js';
import {
  type AgentBundles,
  claimsStruct,
  federatedBundlesFor,
  jwtBundleJwks,
  servableIdentities,
  type WorkloadIdentity,
  uniqueByHint,
  x509SvidResponse,
} from './workload-responses.js';

const td = (name: string) => TrustDomain.parse(name);
const bundles: AgentBundles = {
  own: TrustBundle.create(td('example.org')),
  federated: [TrustBundle.create(td('a.org')), TrustBundle.create(td('b.org'))],
};

describe('uniqueByHint', () => {
  it('keeps order, every identity without a hint, and the first of each hint', () => {
    const dropped: string[] = [];
    const kept = uniqueByHint(
      [
        { id: 1, hint: '' },
        { id: 2, hint: 'x' },
        { id: 3, hint: '' },
        { id: 4, hint: 'x' },
        { id: 5, hint: 'y' },
      ],
      (identity) => dropped.push(String(identity.id)),
    );
    expect(kept.map((identity) => identity.id)).toEqual([1, 2, 3, 5]);
    expect(dropped).toEqual(['4']);
  });
});

describe('federatedBundlesFor', () => {
  it.each([
    ['no entry federates', [[]], []],
    ['one entry federates with a.org', [[td('a.org')]], ['a.org']],
    ['entries federate with both, once each', [[td('b.org')], [td('a.org'), td('b.org')]], ['a.org', 'b.org']],
    ['the own trust domain or an unknown one', [[td('example.org'), td('c.org')]], []],
  ])('%s', (_case, federatesWith, expected) => {
    const identities = federatesWith.map((list) => ({ federatesWith: list }));
    expect(federatedBundlesFor(identities, bundles).map((bundle) => bundle.trustDomain.name)).toEqual(expected);
  });
});

describe('jwtBundleJwks', () => {
  it('lists only JWT authorities, each with kid and use jwt-svid, without SPIFFE members', () => {
    const key = {
      kty: 'EC',
      crv: 'P-256',
      x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU',
      y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0',
    };
    const bundle = TrustBundle.create(td('example.org'), {
      jwtAuthorities: { k1: key },
      sequenceNumber: 7,
      refreshHintSeconds: 60,
    });
    expect(JSON.parse(new TextDecoder().decode(jwtBundleJwks(bundle)))).toEqual({
      keys: [{ ...key, kid: 'k1', use: 'jwt-svid' }],
    });
  });
});

describe('x509SvidResponse', () => {
  it('refuses to answer for an identity whose SVID is not signed yet', () => {
    const identity = {
      entryId: 'e1',
      spiffeId: td('example.org').id(),
      hint: '',
      federatesWith: [],
      x509Svid: undefined,
    };
    expect(() => x509SvidResponse([identity], bundles)).toThrow('entry e1: X.509-SVID not signed yet');
  });
});

describe('servableIdentities (the one rule for serving X509-SVIDs)', () => {
  const svid = { chain: [new Uint8Array([1])], privateKey: new Uint8Array([2]) };
  const identity = (path: string, state: 'valid' | 'pending' | 'expired'): WorkloadIdentity => ({
    entryId: path,
    spiffeId: SpiffeId.parse(`spiffe://example.org${path}`),
    hint: '',
    federatesWith: [],
    x509Svid: state === 'valid' ? svid : undefined,
    ...(state === 'expired' && {
      expired: { notAfter: new Date('2026-01-01T00:00:00Z'), reason: 'cannot connect to 127.0.0.1:8081' },
    }),
  });

  it('serves the valid SVIDs alone, never an expired one', () => {
    const servable = servableIdentities([identity('/a', 'expired'), identity('/b', 'valid')]);
    expect(servable.kind === 'ready' && servable.identities.map((each) => each.entryId)).toEqual(['/b']);
  });

  it('waits while an SVID is being signed, unless nothing valid is left', () => {
    expect(servableIdentities([identity('/a', 'valid'), identity('/b', 'pending')]).kind).toBe('pending');
    expect(servableIdentities([]).kind).toBe('ready');
  });

  it('says UNAVAILABLE, which SVID expired when and why, once none is valid', () => {
    const servable = servableIdentities([
      identity('/a', 'expired'),
      identity('/b', 'expired'),
      identity('/c', 'pending'),
    ]);
    expect(servable).toEqual({
      kind: 'expired',
      message:
        'no valid X509-SVID: the one of spiffe://example.org/a (and 1 more) expired at 2026-01-01T00:00:00.000Z and ' +
        'the agent could not renew it: cannot connect to 127.0.0.1:8081',
    });
  });
});

describe('claimsStruct', () => {
  it.each([
    [
      { sub: 's', aud: 'one' },
      { sub: 's', aud: ['one'] },
    ],
    [
      { sub: 's', aud: ['one', 'two'], exp: 5, nested: { a: [1, null] } },
      { sub: 's', aud: ['one', 'two'], exp: 5, nested: { a: [1, null] } },
    ],
  ])('turns %j into %j', (claims, expected) => {
    expect(claimsStruct(claims)).toEqual(expected);
  });
});

describe('encodeGrpcMessage', () => {
  it.each([
    ['no identity issued', 'no identity issued'],
    ['spiffe_id: "spiffe://x/y"', 'spiffe_id: "spiffe://x/y"'],
    ['100% sure', '100%25 sure'],
    ['line\nbreak', 'line%0Abreak'],
    ['héllo', 'h%C3%A9llo'],
  ])('encodes %j as %j, per the gRPC HTTP/2 spec', (message, encoded) => {
    expect(encodeGrpcMessage(message)).toBe(encoded);
    expect(decodeURIComponent(encoded)).toBe(message);
  });
});
