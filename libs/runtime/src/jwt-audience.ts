/**
 * Sigil's caps on the audiences of one JWT-SVID request, applied by the agent's Workload API (FetchJWTSVID and
 * ValidateJWTSVID) and by the server's agent API alike. The SPIFFE standards set no limit; without one a local
 * caller could have the agent sign, cache and send tokens of any size (issue 16 finding 5: 32 audiences of 1 KiB
 * made ~130 KB per cached token). Real callers send one audience, rarely a few: an STS, a cloud provider's token
 * exchange URL, a service's SPIFFE ID. An audience may be as long as a SPIFFE ID may be (2048 bytes).
 */

/** Most audiences one JWT-SVID request may name. */
export const JWT_SVID_MAX_AUDIENCES = 16;

/** Longest audience, in UTF-8 bytes: that of the longest SPIFFE ID (SPIFFE-ID.md §2.3). */
export const JWT_SVID_MAX_AUDIENCE_BYTES = 2048;

/**
 * What is wrong with the audience list of a JWT-SVID request (`field` names it in the message), or undefined: at
 * least one, at most {@link JWT_SVID_MAX_AUDIENCES}, none empty or blank, none longer than
 * {@link JWT_SVID_MAX_AUDIENCE_BYTES} bytes.
 */
export function jwtAudienceProblem(audience: readonly string[], field = 'audience'): string | undefined {
  if (audience.length === 0) return `${field}: must be specified`;
  if (audience.length > JWT_SVID_MAX_AUDIENCES) {
    return `${field}: at most ${JWT_SVID_MAX_AUDIENCES} audiences per request, got ${audience.length}`;
  }
  for (const [i, value] of audience.entries()) {
    const problem = singleAudienceProblem(value, `${field}[${i}]`);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

/** What is wrong with one audience (`field` names it), or undefined: not empty or only spaces, not too long. */
export function singleAudienceProblem(value: string, field = 'audience'): string | undefined {
  if (value.trim() === '') return `${field}: must not be empty or blank`;
  // Cheap first: a string of n UTF-16 units has at most 3n UTF-8 bytes.
  if (value.length * 3 > JWT_SVID_MAX_AUDIENCE_BYTES) {
    const bytes = Buffer.byteLength(value);
    if (bytes > JWT_SVID_MAX_AUDIENCE_BYTES) {
      return `${field}: at most ${JWT_SVID_MAX_AUDIENCE_BYTES} bytes per audience, got ${bytes}`;
    }
  }
  return undefined;
}
