import { AgentApiProtocolError } from './errors.js';

/**
 * The agent's report, sent with every sync (query `svid_issuers`), of the authorities that issued the SVIDs it holds
 * now: its own X509-SVID, its workloads' X509-SVIDs and the JWT-SVIDs it handed out that have not expired. For each
 * authority (an X.509 CA by the hex subject key identifier of its certificate, a JWT key by its `kid`: the
 * `authority_id` of `localauthority show`), the latest expiry among those SVIDs. The server keeps the last report
 * of each agent in the database, so that `localauthority … revoke` on any replica can tell whether a key still
 * issued something in use.
 */
export type SvidIssuers = ReadonlyMap<string, Date>;

/** Most authorities one report names (a trust domain has a handful of keys; anything more is an error). */
export const MAX_SVID_ISSUERS = 32;
/** An authority ID: hex (X.509 subject key identifier) or base64url (JWT kid). */
const AUTHORITY_ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * The query form: `<authority id>:<expiry, unix seconds>` joined by `,`, sorted by authority ID so that an unchanged
 * report is the same string.
 */
export function serializeSvidIssuers(issuers: SvidIssuers): string {
  return [...issuers]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .slice(0, MAX_SVID_ISSUERS)
    .map(([id, expiresAt]) => `${id}:${Math.ceil(expiresAt.getTime() / 1000)}`)
    .join(',');
}

/**
 * Parses the `svid_issuers` query (empty: the agent holds no SVID).
 *
 * @throws AgentApiProtocolError naming the item and the rule it breaks
 */
export function parseSvidIssuers(text: string): Map<string, Date> {
  const issuers = new Map<string, Date>();
  if (text === '') return issuers;
  const items = text.split(',');
  if (items.length > MAX_SVID_ISSUERS) {
    throw new AgentApiProtocolError(
      `svid_issuers: at most ${MAX_SVID_ISSUERS} authorities, got ${items.length}`,
      'svid_issuers',
    );
  }
  for (const [i, item] of items.entries()) {
    const [id = '', seconds = '', extra] = item.split(':');
    if (!AUTHORITY_ID.test(id) || !/^[0-9]{1,12}$/.test(seconds) || extra !== undefined) {
      throw new AgentApiProtocolError(
        `svid_issuers[${i}]: must be <authority id>:<unix seconds> (authority id of 1 to 128 characters ` +
          'A-Z a-z 0-9 _ -)',
        'svid_issuers',
      );
    }
    if (issuers.has(id)) {
      throw new AgentApiProtocolError(`svid_issuers[${i}]: authority '${id}' is named twice`, 'svid_issuers');
    }
    issuers.set(id, new Date(Number(seconds) * 1000));
  }
  return issuers;
}
