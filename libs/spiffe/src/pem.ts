/**
 * Small encoding helpers: PEM armour, concatenated DER framing and strict base64. They move bytes around and never
 * interpret keys or signatures.
 */

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Copies any byte container into a plain `Uint8Array`. */
export function toBytes(data: ArrayBuffer | ArrayBufferView): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data.slice(0));
  return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
}

/** Concatenates byte arrays. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** True when both hold the same bytes. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Encodes DER blobs as PEM blocks with the given label, 64 base64 characters a line. */
export function encodePem(label: string, ders: readonly Uint8Array[]): string {
  return ders
    .map((der) => {
      const lines =
        Buffer.from(der)
          .toString('base64')
          .match(/.{1,64}/g) ?? [];
      return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
    })
    .join('');
}

/**
 * Decodes every PEM block of `pem`, which must all carry `label`. Text outside the blocks is ignored, as OpenSSL
 * does. Returns the reason as a string on failure so each caller raises its own error code.
 */
export function decodePem(pem: string, label: string): Uint8Array[] | string {
  const blocks: Uint8Array[] = [];
  for (const match of pem.matchAll(PEM_BLOCK)) {
    const [, begin, body, end] = match as unknown as [string, string, string, string];
    if (begin !== end) return `pem block ${blocks.length} begins as ${begin} but ends as ${end}`;
    if (begin !== label) return `pem block ${blocks.length} is a ${begin}, expected ${label}`;
    const bytes = decodeBase64(body.replace(/\s+/g, ''));
    if (bytes === undefined) return `pem block ${blocks.length} is not valid base64`;
    blocks.push(bytes);
  }
  if (blocks.length === 0) return `no ${label} pem block found`;
  return blocks;
}

/** Decodes standard (not URL-safe) padded base64, or returns `undefined` if the text is not exactly that. */
export function decodeBase64(text: string): Uint8Array | undefined {
  if (text.length === 0 || !BASE64.test(text)) return undefined;
  return new Uint8Array(Buffer.from(text, 'base64'));
}

/**
 * Splits concatenated DER structures (the Workload API's `x509_svid` and `bundle` fields) into one blob each, by
 * reading the outer tag and length of each. Returns the reason as a string on failure.
 */
export function splitDer(data: Uint8Array): Uint8Array[] | string {
  const items: Uint8Array[] = [];
  let offset = 0;
  while (offset < data.length) {
    const start = offset;
    if (data[offset] !== 0x30) return `der item ${items.length} does not start with a sequence tag`;
    if (offset + 2 > data.length) return `der item ${items.length} is truncated`;
    let length = data[offset + 1] as number;
    offset += 2;
    if (length & 0x80) {
      const lengthBytes = length & 0x7f;
      // DER uses the long form only for lengths of 128 or more, in at most 4 bytes here (certificates < 4 GiB).
      if (lengthBytes === 0 || lengthBytes > 4) return `der item ${items.length} has an unsupported length encoding`;
      if (offset + lengthBytes > data.length) return `der item ${items.length} is truncated`;
      length = 0;
      for (let i = 0; i < lengthBytes; i++) length = length * 256 + (data[offset + i] as number);
      offset += lengthBytes;
      if (length < 0x80) return `der item ${items.length} has a non-minimal length encoding`;
    }
    if (offset + length > data.length) return `der item ${items.length} is truncated`;
    offset += length;
    items.push(data.slice(start, offset));
  }
  if (items.length === 0) return 'no der item found';
  return items;
}
