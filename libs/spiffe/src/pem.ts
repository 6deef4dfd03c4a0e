/**
 * Small encoding helpers: PEM armour (Sigil's one PEM codec, which @sigil/pki builds on), concatenated DER framing
 * and strict base64. They move bytes around and never interpret keys or signatures.
 */

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

/** One decoded PEM block (RFC 7468): its label and DER bytes. */
export interface PemBlock {
  readonly label: string;
  readonly der: Uint8Array;
}

const PEM_LABEL_RULE = /^[A-Z0-9]+(?: [A-Z0-9]+)*$/;
const BEGIN = /^-----BEGIN (.*)-----$/;
const END = /^-----END (.*)-----$/;
/** An END line and the next BEGIN line run together, as `cat` makes of a file that does not end in a newline. */
const JOINED_BOUNDARIES = /^(-----END [A-Z0-9 ]*-----)(-----BEGIN [A-Z0-9 ]*-----)$/;
const PEM_LINE_LENGTH = 64;

/** True for a label Sigil reads and writes: uppercase words of letters and digits separated by single spaces. */
export function isPemLabel(label: unknown): label is string {
  return typeof label === 'string' && PEM_LABEL_RULE.test(label);
}

/** Encodes DER bytes as one PEM block with 64-character lines (RFC 7468 §2), ending in a newline. */
export function encodePemBlock(label: string, der: Uint8Array): string {
  const base64 = Buffer.from(der).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < base64.length; i += PEM_LINE_LENGTH) lines.push(base64.slice(i, i + PEM_LINE_LENGTH));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Encodes DER blobs as consecutive PEM blocks with the given label (see {@link encodePemBlock}). */
export function encodePem(label: string, ders: readonly Uint8Array[]): string {
  return ders.map((der) => encodePemBlock(label, der)).join('');
}

/**
 * Decodes every PEM block of a text (RFC 7468), strictly: BEGIN and END labels must match and be uppercase words,
 * blocks must not nest or be left open, the body must be canonical padded base64 with no headers, and any other line
 * starting with `-----` is an error. What stays lenient, as RFC 7468 §2 and §3 allow and as the files operators and
 * OpenSSL write need: explanatory text before, between and after blocks; CRLF line ends and whitespace around a line;
 * base64 lines of any length; and an END line run together with the next BEGIN line, which is what concatenating PEM
 * files that lack a final newline gives (the boundaries stay unambiguous). Returns no block for a text without one; each caller says what it expected. Returns
 * the reason as a string on failure (naming the line and rule) so each caller raises its own error type.
 */
export function decodePemBlocks(pem: string): PemBlock[] | string {
  const blocks: PemBlock[] = [];
  let open: { label: string; line: number; body: string[] } | undefined;
  const lines = pem.split(/\r?\n/);
  for (const [index, raw] of lines.entries()) {
    const lineNumber = index + 1;
    const trimmed = raw.trim();
    const joined = JOINED_BOUNDARIES.exec(trimmed);
    for (const line of joined ? [joined[1]!, joined[2]!] : [trimmed]) {
      const begin = BEGIN.exec(line);
      const end = END.exec(line);
      if (open === undefined) {
        if (begin) {
          if (!isPemLabel(begin[1])) return `pem line ${lineNumber}: invalid label ${JSON.stringify(begin[1])}`;
          open = { label: begin[1], line: lineNumber, body: [] };
        } else if (line.startsWith('-----')) {
          return `pem line ${lineNumber}: ${end ? 'END without a matching BEGIN' : 'malformed boundary line'}`;
        }
        continue;
      }
      if (end) {
        if (end[1] !== open.label) {
          return `pem line ${lineNumber}: END label "${end[1]}" does not match BEGIN label "${open.label}"`;
        }
        const der = decodePemBody(open.body.join(''), `pem "${open.label}" block on line ${open.line}`);
        if (typeof der === 'string') return der;
        blocks.push({ label: open.label, der });
        open = undefined;
      } else if (begin) {
        return `pem line ${lineNumber}: BEGIN inside the "${open.label}" block opened on line ${open.line}`;
      } else if (line.startsWith('-----')) {
        return `pem line ${lineNumber}: malformed boundary line`;
      } else {
        open.body.push(line);
      }
    }
  }
  if (open !== undefined) return `pem: "${open.label}" block opened on line ${open.line} has no END line`;
  return blocks;
}

function decodePemBody(body: string, where: string): Uint8Array | string {
  if (body.length === 0) return `${where}: body is empty`;
  if (body.includes(':')) return `${where}: headers are not allowed`;
  const der = decodeBase64(body);
  if (der === undefined) return `${where}: body is not valid base64`;
  // Buffer ignores non-zero padding bits; a canonical body is exactly what re-encoding the bytes gives.
  if (Buffer.from(der).toString('base64') !== body) return `${where}: body is not canonical base64`;
  return der;
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
