import { createHash, randomBytes } from 'node:crypto';

/** A new random bearer secret: 256 bits, base64url, with an optional prefix that secret scanners can spot. */
export function generateSecretToken(prefix = ''): string {
  return `${prefix}${randomBytes(32).toString('base64url')}`;
}

/**
 * The stored form of a bearer secret: hex SHA-256. Enough for 256-bit random tokens (no dictionary to attack), and
 * a lookup by this hash leaks nothing useful through timing because the attacker cannot choose the hash.
 */
export function hashSecretToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}
