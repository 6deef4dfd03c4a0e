import { AppError } from './errors.js';

/**
 * The `next_page_token` of a keyset-paged listing: the last key of the page, base64url. Opaque to callers; the
 * server only checks that it round-trips and that the key it holds has the listing's form.
 */
export function encodePageToken(lastKey: string): string {
  return Buffer.from(lastKey, 'utf8').toString('base64url');
}

/**
 * The key a page token holds.
 *
 * @throws AppError `invalid_argument` when the token was not made by {@link encodePageToken} or its key fails
 * `isKey`.
 */
export function decodePageToken(token: string, isKey: (key: string) => boolean): string {
  const key = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, 'base64url').toString('utf8') : '';
  if (key === '' || encodePageToken(key) !== token || !isKey(key)) {
    throw new AppError('invalid_argument', 'page_token: not a token returned by a previous page');
  }
  return key;
}
