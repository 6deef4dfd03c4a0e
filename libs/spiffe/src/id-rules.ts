/**
 * The character and shape rules of SPIFFE-ID.md §2, shared by `TrustDomain` and `SpiffeId`. Each check returns the
 * broken rule as a lowercase sentence, or `undefined` when the input is valid.
 */

/** SPIFFE-ID.md §2.3: implementations must support, and should not generate, IDs longer than 2048 bytes. */
export const MAX_SPIFFE_ID_BYTES = 2048;
/** SPIFFE-ID.md §2.3: RFC 3986 limits the host, hence the trust domain name, to 255 bytes. */
export const MAX_TRUST_DOMAIN_BYTES = 255;

export const RULE_EMPTY_TRUST_DOMAIN = 'trust domain is missing';
export const RULE_TRUST_DOMAIN_PORT = 'trust domain must not contain a port (no ":" is allowed)';
export const RULE_TRUST_DOMAIN_USERINFO = 'trust domain must not contain user info (no "@" is allowed)';
export const RULE_TRUST_DOMAIN_PERCENT = 'trust domain must not contain percent-encoded characters';
export const RULE_TRUST_DOMAIN_CHARS =
  'trust domain characters are limited to lowercase letters, digits, dots, dashes and underscores';
export const RULE_TRUST_DOMAIN_LENGTH = `trust domain must be at most ${MAX_TRUST_DOMAIN_BYTES} bytes`;
export const RULE_PATH_LEADING_SLASH = 'path must start with a slash';
export const RULE_PATH_TRAILING_SLASH = 'path must not end with a slash';
export const RULE_PATH_EMPTY_SEGMENT = 'path must not contain empty segments';
export const RULE_PATH_DOT_SEGMENT = 'path must not contain dot segments ("." or "..")';
export const RULE_PATH_PERCENT = 'path must not contain percent-encoded characters';
export const RULE_PATH_CHARS = 'path segment characters are limited to letters, digits, dots, dashes and underscores';

const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const PATH_SEGMENT_CHARS = /^[a-zA-Z0-9._-]+$/;
/** A whole path of allowed segments (dot segments aside): the common case, checked in one pass. */
const PATH_CHARS = /^(?:\/[a-zA-Z0-9._-]+)+$/;
/** A `.` or `..` segment anywhere in a path. */
const DOT_SEGMENT = /\/\.\.?(?:\/|$)/;
const ASCII_UPPERCASE = /[A-Z]/;

/**
 * Lowercases ASCII letters only: the scheme and trust domain are case-insensitive (SPIFFE-ID.md §2.4), while a
 * locale-aware `toLowerCase` could map a non-ASCII character onto an allowed ASCII one.
 */
export function lowercaseAscii(value: string): string {
  return ASCII_UPPERCASE.test(value) ? value.replace(/[A-Z]/g, (c) => c.toLowerCase()) : value;
}

/** Checks an already lowercased trust domain name against SPIFFE-ID.md §2.1 and §2.3. */
export function checkTrustDomainName(name: string): string | undefined {
  if (name.length === 0) return RULE_EMPTY_TRUST_DOMAIN;
  if (name.includes('@')) return RULE_TRUST_DOMAIN_USERINFO;
  if (name.includes(':')) return RULE_TRUST_DOMAIN_PORT;
  if (name.includes('%')) return RULE_TRUST_DOMAIN_PERCENT;
  if (!TRUST_DOMAIN_CHARS.test(name)) return RULE_TRUST_DOMAIN_CHARS;
  // Every remaining character is ASCII, so the string length is the byte length.
  if (name.length > MAX_TRUST_DOMAIN_BYTES) return RULE_TRUST_DOMAIN_LENGTH;
  return undefined;
}

/** Checks one path segment (SPIFFE-ID.md §2.2). */
export function checkPathSegment(segment: string): string | undefined {
  if (segment.length === 0) return RULE_PATH_EMPTY_SEGMENT;
  if (segment === '.' || segment === '..') return RULE_PATH_DOT_SEGMENT;
  if (segment.includes('%')) return RULE_PATH_PERCENT;
  if (!PATH_SEGMENT_CHARS.test(segment)) return RULE_PATH_CHARS;
  return undefined;
}

/** Checks a whole path: empty (the trust domain's own ID) or `/segment(/segment)*` (SPIFFE-ID.md §2.2). */
export function checkPath(path: string): string | undefined {
  if (path.length === 0) return undefined;
  if (!path.startsWith('/')) return RULE_PATH_LEADING_SLASH;
  if (path.endsWith('/')) return RULE_PATH_TRAILING_SLASH;
  if (PATH_CHARS.test(path) && !DOT_SEGMENT.test(path)) return undefined;
  // Something is wrong: find the first segment at fault, for its rule.
  for (const segment of path.slice(1).split('/')) {
    const failure = checkPathSegment(segment);
    if (failure !== undefined) return failure;
  }
  return undefined;
}
