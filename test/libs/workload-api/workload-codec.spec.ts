/**
 * The client's hand-held codec (libs/workload-api/src/workload-codec.ts) against the schemas protoc-gen-es generated
 * from proto/workload.proto, which the agent's server encodes and decodes with: every response message the server
 * can send decodes to the same fields, every request the client sends decodes on the server to what was asked, for
 * arbitrary field values (fast-check) and with fields the client does not know.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  JWTBundlesResponseSchema,
  JWTSVIDRequestSchema,
  JWTSVIDResponseSchema,
  ValidateJWTSVIDRequestSchema,
  ValidateJWTSVIDResponseSchema,
  X509BundlesResponseSchema,
  X509SVIDResponseSchema,
} from '../../../libs/workload-api/src/gen/workload_pb.js';
import {
  decodeJwtBundlesResponse,
  decodeJwtSvidResponse,
  decodeValidateJwtSvidResponse,
  decodeX509BundlesResponse,
  decodeX509SvidResponse,
  encodeJwtSvidRequest,
  encodeValidateJwtSvidRequest,
} from '../../../libs/workload-api/src/workload-codec.js';

const RUNS = { numRuns: 200 };
const bytes = fc.uint8Array({ maxLength: 64 });
const text = fc.string({ unit: 'grapheme', maxLength: 24 });
// protobuf-es's `create`, which builds the reference messages, sets a `__proto__` map key as the object's prototype;
// the codec's handling of that key is checked on hand-written bytes below ("__proto__ is an ordinary key").
const byteMap = fc.dictionary(
  text.filter((key) => key !== '__proto__'),
  bytes,
  { maxKeys: 4 },
);

/** Plain fields of a decoded or generated message, for comparing the two. */
function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return [...value];
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([key]) => key !== '$typeName')
      .map(([key, field]) => [key, plain(field)]),
  );
}

/** `message` with an unknown field of every wire type after its own fields. */
function withUnknownFields(message: Uint8Array): Uint8Array {
  const extra = new BinaryWriter()
    .tag(90, WireType.Varint)
    .uint64(2n ** 40n)
    .tag(91, WireType.Bit64)
    .fixed64(7)
    .tag(92, WireType.LengthDelimited)
    .bytes(new Uint8Array([1, 2, 3]))
    .tag(93, WireType.Bit32)
    .fixed32(9)
    .finish();
  return Buffer.concat([message, extra]);
}

describe('the Workload API codec agrees with the generated schemas', () => {
  it('X509SVIDResponse', () => {
    const svid = fc.record({ spiffeId: text, x509Svid: bytes, x509SvidKey: bytes, bundle: bytes, hint: text });
    fc.assert(
      fc.property(fc.array(svid, { maxLength: 3 }), fc.array(bytes, { maxLength: 2 }), byteMap, (svids, crl, fed) => {
        const message = create(X509SVIDResponseSchema, { svids, crl, federatedBundles: fed });
        const encoded = toBinary(X509SVIDResponseSchema, message);
        expect(plain(decodeX509SvidResponse(encoded))).toEqual(plain(message));
        expect(plain(decodeX509SvidResponse(withUnknownFields(encoded)))).toEqual(plain(message));
      }),
      RUNS,
    );
  });

  it('X509BundlesResponse, JWTBundlesResponse, JWTSVIDResponse and ValidateJWTSVIDResponse', () => {
    const jwtSvid = fc.record({ spiffeId: text, svid: text, hint: text });
    fc.assert(
      fc.property(
        byteMap,
        fc.array(bytes, { maxLength: 2 }),
        fc.array(jwtSvid, { maxLength: 3 }),
        text,
        (map, crl, svids, id) => {
          const x509 = create(X509BundlesResponseSchema, { crl, bundles: map });
          expect(plain(decodeX509BundlesResponse(toBinary(X509BundlesResponseSchema, x509)))).toEqual(plain(x509));
          const jwt = create(JWTBundlesResponseSchema, { bundles: map });
          expect(plain(decodeJwtBundlesResponse(withUnknownFields(toBinary(JWTBundlesResponseSchema, jwt))))).toEqual(
            plain(jwt),
          );
          const tokens = create(JWTSVIDResponseSchema, { svids });
          expect(plain(decodeJwtSvidResponse(toBinary(JWTSVIDResponseSchema, tokens)))).toEqual(plain(tokens));
          const validated = create(ValidateJWTSVIDResponseSchema, {
            spiffeId: id,
            claims: { fields: { sub: { kind: { case: 'stringValue', value: id } } } },
          });
          expect(decodeValidateJwtSvidResponse(toBinary(ValidateJWTSVIDResponseSchema, validated))).toEqual({
            spiffeId: id,
          });
        },
      ),
      RUNS,
    );
  });

  it('the requests decode on the server to what the client asked', () => {
    fc.assert(
      fc.property(fc.array(text, { maxLength: 4 }), text, text, (audience, spiffeId, svid) => {
        const jwt = fromBinary(JWTSVIDRequestSchema, encodeJwtSvidRequest({ audience, spiffeId }));
        expect({ audience: jwt.audience, spiffeId: jwt.spiffeId }).toEqual({ audience, spiffeId });
        const validate = fromBinary(
          ValidateJWTSVIDRequestSchema,
          encodeValidateJwtSvidRequest({ audience: spiffeId, svid }),
        );
        expect({ audience: validate.audience, svid: validate.svid }).toEqual({ audience: spiffeId, svid });
      }),
      RUNS,
    );
  });

  it('the last value of a map key wins, and __proto__ is an ordinary key', () => {
    const entry = (key: string, value: number): Uint8Array =>
      new BinaryWriter()
        .tag(1, WireType.LengthDelimited)
        .fork()
        .tag(1, WireType.LengthDelimited)
        .string(key)
        .tag(2, WireType.LengthDelimited)
        .bytes(new Uint8Array([value]))
        .join()
        .finish();
    const decoded = decodeJwtBundlesResponse(
      Buffer.concat([entry('spiffe://a', 1), entry('__proto__', 2), entry('spiffe://a', 3)]),
    );
    expect(Object.getPrototypeOf(decoded.bundles)).toBeNull();
    expect(Object.keys(decoded.bundles)).toEqual(['spiffe://a', '__proto__']);
    expect([...decoded.bundles['spiffe://a']!]).toEqual([3]);
    expect([...decoded.bundles['__proto__']!]).toEqual([2]);
  });

  it('refuses truncated messages, known fields of the wrong wire type and strings that are not UTF-8', () => {
    const valid = toBinary(
      X509SVIDResponseSchema,
      create(X509SVIDResponseSchema, { svids: [{ spiffeId: 'spiffe://example.org/w', x509Svid: new Uint8Array(9) }] }),
    );
    for (let cut = 1; cut < valid.length; cut++) {
      expect(() => decodeX509SvidResponse(valid.subarray(0, cut)), `cut at ${cut}`).toThrow();
    }
    expect(() => decodeX509SvidResponse(new BinaryWriter().tag(1, WireType.Varint).uint32(1).finish())).toThrow(
      /field 1 has wire type 0/,
    );
    const notUtf8 = new BinaryWriter()
      .tag(1, WireType.LengthDelimited)
      .fork()
      .tag(1, WireType.LengthDelimited)
      .bytes(new Uint8Array([0xc3, 0x28]))
      .join()
      .finish();
    expect(() => decodeJwtSvidResponse(notUtf8)).toThrow();
  });
});
