import { type FastifyRequest } from 'fastify';
import { AppError } from './errors.js';

/** Largest request body the API accepts; larger ones get 413 `resource_exhausted`. */
export const BODY_LIMIT_BYTES = 1024 * 1024;

/**
 * Largest body of an open node attestation route (`@Public('attestation')`): anyone may send one, so the server
 * reads no more than an attestation can need: an x509pop chain of at most 32 KiB of DER in base64 (43,692 bytes),
 * a CSR of at most 16 KiB in base64 (21,848 bytes), a signature and the field names. Larger ones get 413.
 */
export const ATTESTATION_BODY_LIMIT_BYTES = 96 * 1024;

/**
 * Deepest nesting of arrays and objects a JSON body may have. Our deepest body (`entries[].selectors[]`) nests four
 * levels; class-transformer and class-validator recurse once per level and overflow the stack near ten thousand.
 */
export const MAX_JSON_DEPTH = 32;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;

/**
 * Whether a JSON text nests arrays and objects deeper than `maxDepth`, found by one scan of the bytes (brackets
 * inside strings do not count), without parsing: the check must not recurse itself. Exact for valid JSON; for
 * invalid JSON the answer does not matter, since the parser refuses it next.
 */
export function exceedsJsonDepth(text: Uint8Array, maxDepth: number): boolean {
  let depth = 0;
  let inString = false;
  for (let index = 0; index < text.length; index++) {
    const byte = text[index];
    if (inString) {
      if (byte === BACKSLASH) index++;
      else if (byte === QUOTE) inString = false;
    } else if (byte === QUOTE) {
      inString = true;
    } else if (byte === OPEN_ARRAY || byte === OPEN_OBJECT) {
      if (++depth > maxDepth) return true;
    } else if (byte === CLOSE_ARRAY || byte === CLOSE_OBJECT) {
      depth--;
    }
  }
  return false;
}

type BodyParser = (request: FastifyRequest, body: Buffer, done: (error: Error | null, value?: unknown) => void) => void;

/**
 * The JSON body parser of every route on both listeners: refuses a body nested deeper than {@link MAX_JSON_DEPTH}
 * with 400 `invalid_argument` before it is parsed, so nothing downstream (class-transformer, class-validator, our
 * own checks) ever walks a deep tree; then hands over to Fastify's parser (`parse`), which keeps its
 * prototype-poisoning checks and its errors for empty and malformed JSON. Every body of the API is an object: any
 * other JSON value is refused too (Nest's ValidationPipe would take `null` for `{}`).
 */
export function createJsonBodyParser(parse: BodyParser): BodyParser {
  return (request, body, done) => {
    if (exceedsJsonDepth(body, MAX_JSON_DEPTH)) {
      done(new AppError('invalid_argument', `request body: nested deeper than ${MAX_JSON_DEPTH} levels`));
      return;
    }
    parse(request, body, (error, value) => {
      if (error === null && (typeof value !== 'object' || value === null || Array.isArray(value))) {
        done(new AppError('invalid_argument', 'request body: must be a JSON object'));
        return;
      }
      done(error, value);
    });
  };
}
