import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';

/*
 * The client's protobuf codec of the Workload API messages (proto/workload.proto), on `@bufbuild/protobuf/wire`'s
 * reader and writer only. The generated schemas (gen/workload_pb.ts) need protobuf-es's reflection and registry,
 * whose ~60 modules took longer to load than the rest of `sigil-agent api fetch x509` together (bench/README.md,
 * "Client command start-up"); the agent's server keeps using them. test/libs/workload-api/workload-codec.spec.ts
 * checks this codec against the generated schemas both ways, field by field.
 *
 * Decoding follows proto3: unknown fields are skipped, the last value of a scalar field and of a map key wins, absent
 * fields have their default. Stricter than `fromBinary`'s defaults: strings must be valid UTF-8 (as proto3 requires)
 * and a known field with the wrong wire type is refused. Maps are objects without a prototype, so a key such as
 * `__proto__` is an ordinary key.
 */

/** `X509SVID{spiffe_id=1, x509_svid=2, x509_svid_key=3, bundle=4, hint=5}`. */
export interface X509SvidMessage {
  spiffeId: string;
  x509Svid: Uint8Array;
  x509SvidKey: Uint8Array;
  bundle: Uint8Array;
  hint: string;
}

/** `X509SVIDResponse{svids=1, crl=2, federated_bundles=3}`. */
export interface X509SvidResponseMessage {
  svids: X509SvidMessage[];
  crl: Uint8Array[];
  federatedBundles: Record<string, Uint8Array>;
}

/** `X509BundlesResponse{crl=1, bundles=2}`. */
export interface X509BundlesResponseMessage {
  crl: Uint8Array[];
  bundles: Record<string, Uint8Array>;
}

/** `JWTSVID{spiffe_id=1, svid=2, hint=3}`. */
export interface JwtSvidMessage {
  spiffeId: string;
  svid: string;
  hint: string;
}

/** `JWTSVIDResponse{svids=1}`. */
export interface JwtSvidResponseMessage {
  svids: JwtSvidMessage[];
}

/** `JWTBundlesResponse{bundles=1}`. */
export interface JwtBundlesResponseMessage {
  bundles: Record<string, Uint8Array>;
}

/** `ValidateJWTSVIDResponse{spiffe_id=1, claims=2}`; the claims (a `google.protobuf.Struct`) are not read. */
export interface ValidateJwtSvidResponseMessage {
  spiffeId: string;
}

/** The empty request messages (`X509SVIDRequest`, `X509BundlesRequest`, `JWTBundlesRequest`). */
export const EMPTY_REQUEST = new Uint8Array(0);

/** `JWTSVIDRequest{audience=1 (repeated), spiffe_id=2}`. */
export function encodeJwtSvidRequest(request: { audience: readonly string[]; spiffeId: string }): Uint8Array {
  const writer = new BinaryWriter();
  for (const audience of request.audience) writer.tag(1, WireType.LengthDelimited).string(audience);
  if (request.spiffeId !== '') writer.tag(2, WireType.LengthDelimited).string(request.spiffeId);
  return writer.finish();
}

/** `ValidateJWTSVIDRequest{audience=1, svid=2}`. */
export function encodeValidateJwtSvidRequest(request: { audience: string; svid: string }): Uint8Array {
  const writer = new BinaryWriter();
  if (request.audience !== '') writer.tag(1, WireType.LengthDelimited).string(request.audience);
  if (request.svid !== '') writer.tag(2, WireType.LengthDelimited).string(request.svid);
  return writer.finish();
}

/** Checks that a field the message defines does not arrive with another wire type. */
function knownWireTypes(fieldCount: number, message: string): (fieldNo: number, wireType: number) => void {
  return (fieldNo, wireType) => {
    if (fieldNo <= fieldCount && wireType !== WireType.LengthDelimited) {
      throw new Error(`${message}: field ${fieldNo} has wire type ${wireType}, expected length-delimited`);
    }
  };
}

/** Reads a message of `fieldCount` length-delimited fields from `bytes` or from a nested message at `reader`. */
function decode<T>(
  input: BinaryReader,
  end: number,
  message: string,
  fieldCount: number,
  init: T,
  field: (target: T, fieldNo: number, reader: BinaryReader) => void,
): T {
  const check = knownWireTypes(fieldCount, message);
  while (input.pos < end) {
    const [fieldNo, wireType] = input.tag();
    check(fieldNo, wireType);
    if (fieldNo <= fieldCount) field(init, fieldNo, input);
    else input.skip(wireType, fieldNo);
  }
  if (input.pos !== end) throw new Error(`${message}: premature end of message`);
  return init;
}

const string = (reader: BinaryReader): string => reader.string(true);
// A copy, so that no result keeps the whole frame's buffer alive (or shares it with the caller).
const bytes = (reader: BinaryReader): Uint8Array => reader.bytes().slice();

/** The end of the nested message (or map entry) whose length prefix is at `reader`. */
function nestedEnd(reader: BinaryReader): number {
  const length = reader.uint32();
  const end = reader.pos + length;
  if (end > reader.len) throw new Error('premature end of nested message');
  return end;
}

/** One `map<string, bytes>` entry (`key=1, value=2`) into `map`. */
function readMapEntry(reader: BinaryReader, map: Record<string, Uint8Array>, message: string): void {
  const init: { key: string; value: Uint8Array } = { key: '', value: new Uint8Array(0) };
  const entry = decode(reader, nestedEnd(reader), `${message} entry`, 2, init, (e, fieldNo, r) => {
    if (fieldNo === 1) e.key = string(r);
    else e.value = bytes(r);
  });
  map[entry.key] = entry.value;
}

const emptyMap = (): Record<string, Uint8Array> => Object.create(null) as Record<string, Uint8Array>;

function top<T>(bytesIn: Uint8Array, read: (reader: BinaryReader) => T): T {
  const reader = new BinaryReader(bytesIn);
  return read(reader);
}

/** Decodes an `X509SVIDResponse`. @throws Error when the bytes are not one. */
export function decodeX509SvidResponse(input: Uint8Array): X509SvidResponseMessage {
  return top(input, (reader) =>
    decode(
      reader,
      reader.len,
      'X509SVIDResponse',
      3,
      { svids: [], crl: [], federatedBundles: emptyMap() } as X509SvidResponseMessage,
      (response, fieldNo, r) => {
        if (fieldNo === 1) response.svids.push(decodeX509Svid(r));
        else if (fieldNo === 2) response.crl.push(bytes(r));
        else readMapEntry(r, response.federatedBundles, 'X509SVIDResponse.federated_bundles');
      },
    ),
  );
}

function decodeX509Svid(reader: BinaryReader): X509SvidMessage {
  const empty = new Uint8Array(0);
  return decode(
    reader,
    nestedEnd(reader),
    'X509SVID',
    5,
    { spiffeId: '', x509Svid: empty, x509SvidKey: empty, bundle: empty, hint: '' } as X509SvidMessage,
    (svid, fieldNo, r) => {
      if (fieldNo === 1) svid.spiffeId = string(r);
      else if (fieldNo === 2) svid.x509Svid = bytes(r);
      else if (fieldNo === 3) svid.x509SvidKey = bytes(r);
      else if (fieldNo === 4) svid.bundle = bytes(r);
      else svid.hint = string(r);
    },
  );
}

/** Decodes an `X509BundlesResponse`. @throws Error when the bytes are not one. */
export function decodeX509BundlesResponse(input: Uint8Array): X509BundlesResponseMessage {
  return top(input, (reader) =>
    decode(
      reader,
      reader.len,
      'X509BundlesResponse',
      2,
      { crl: [], bundles: emptyMap() } as X509BundlesResponseMessage,
      (response, fieldNo, r) => {
        if (fieldNo === 1) response.crl.push(bytes(r));
        else readMapEntry(r, response.bundles, 'X509BundlesResponse.bundles');
      },
    ),
  );
}

/** Decodes a `JWTSVIDResponse`. @throws Error when the bytes are not one. */
export function decodeJwtSvidResponse(input: Uint8Array): JwtSvidResponseMessage {
  return top(input, (reader) =>
    decode(reader, reader.len, 'JWTSVIDResponse', 1, { svids: [] } as JwtSvidResponseMessage, (response, _n, r) => {
      response.svids.push(
        decode(
          r,
          nestedEnd(r),
          'JWTSVID',
          3,
          { spiffeId: '', svid: '', hint: '' } as JwtSvidMessage,
          (svid, fieldNo, nested) => {
            if (fieldNo === 1) svid.spiffeId = string(nested);
            else if (fieldNo === 2) svid.svid = string(nested);
            else svid.hint = string(nested);
          },
        ),
      );
    }),
  );
}

/** Decodes a `JWTBundlesResponse`. @throws Error when the bytes are not one. */
export function decodeJwtBundlesResponse(input: Uint8Array): JwtBundlesResponseMessage {
  return top(input, (reader) =>
    decode(
      reader,
      reader.len,
      'JWTBundlesResponse',
      1,
      { bundles: emptyMap() } as JwtBundlesResponseMessage,
      (response, _n, r) => readMapEntry(r, response.bundles, 'JWTBundlesResponse.bundles'),
    ),
  );
}

/** Decodes a `ValidateJWTSVIDResponse` (its `spiffe_id`; `claims` is skipped). @throws Error when not one. */
export function decodeValidateJwtSvidResponse(input: Uint8Array): ValidateJwtSvidResponseMessage {
  return top(input, (reader) =>
    decode(
      reader,
      reader.len,
      'ValidateJWTSVIDResponse',
      2,
      { spiffeId: '' } as ValidateJwtSvidResponseMessage,
      (response, fieldNo, r) => {
        if (fieldNo === 1) response.spiffeId = string(r);
        else r.skip(WireType.LengthDelimited, fieldNo);
      },
    ),
  );
}
