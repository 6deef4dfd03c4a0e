import { PkiError, validateDnsName } from '@sigil/pki';
import { SpiffeError, SpiffeId, TrustDomain, utf8LongerThan } from '@sigil/spiffe';
import {
  SELECTOR_LIMITS,
  SelectorError,
  checkSelector,
  compareSelectors,
  isReservedSigilPath,
  formatSelector,
  parseSelector,
  selectorKey,
  storedTextProblem,
} from '@sigil/runtime';
import { AppError } from '../common/errors.js';
import type { EntryInput, Selector } from './entry.js';

/** Bounds of an entry's fields (stated here once; the DTOs and the API docs refer to them). */
export const ENTRY_LIMITS = {
  maxSelectors: SELECTOR_LIMITS.maxPerEntry,
  maxDnsNames: 32,
  maxFederatesWith: 32,
  /** SPIRE's limit, in bytes. */
  maxHintBytes: 1024,
  /** 0 = server default; otherwise 1 minute to 1 year. */
  x509SvidTtl: { min: 60, max: 365 * 24 * 3600 },
  /** 0 = server default; otherwise 30 seconds to 1 day (JWT-SVIDs are bearer tokens: keep them short). */
  jwtSvidTtl: { min: 30, max: 24 * 3600 },
} as const;

/** An entry's fields after validation: normalised (lowercase DNS names and trust domains, sorted sets). */
export interface ValidEntryFields {
  spiffeId: string;
  parentId: string;
  selectors: Selector[];
  x509SvidTtl: number;
  jwtSvidTtl: number;
  dnsNames: string[];
  federatesWith: string[];
  admin: boolean;
  downstream: boolean;
  hint: string;
  expiresAt: Date | null;
}

export interface EntryRuleContext {
  /** The server's trust domain: every entry's SPIFFE ID and parent ID belong to it. */
  trustDomain: TrustDomain;
  now: Date;
  /** Whether `expiresAt` must lie in the future (on create, and on update when the patch sets it). */
  checkExpiry: boolean;
}

function invalid(message: string): AppError {
  return new AppError('invalid_argument', message);
}

function quote(text: string): string {
  return JSON.stringify(text);
}

/**
 * Checks every field of an entry and returns it normalised, or throws `AppError('invalid_argument')` whose message
 * names the field and the rule, e.g. `selectors.1.type: must not be empty`.
 */
export function validateEntry(input: EntryInput, context: EntryRuleContext): ValidEntryFields {
  if (typeof input !== 'object' || input === null) throw invalid('entry: must be an object');
  const spiffeId = checkWorkloadId('spiffe_id', input.spiffeId, context.trustDomain);
  const parentId = checkMemberId('parent_id', input.parentId, context.trustDomain);
  if (spiffeId.equals(parentId)) throw invalid('spiffe_id: must differ from parent_id');
  return {
    spiffeId: spiffeId.toString(),
    parentId: parentId.toString(),
    selectors: checkSelectors(input.selectors),
    x509SvidTtl: checkTtl('x509_svid_ttl', input.x509SvidTtl ?? 0, ENTRY_LIMITS.x509SvidTtl),
    jwtSvidTtl: checkTtl('jwt_svid_ttl', input.jwtSvidTtl ?? 0, ENTRY_LIMITS.jwtSvidTtl),
    dnsNames: checkDnsNames(input.dnsNames ?? []),
    federatesWith: checkFederatesWith(input.federatesWith ?? [], context.trustDomain),
    admin: checkBoolean('admin', input.admin ?? false),
    downstream: checkBoolean('downstream', input.downstream ?? false),
    hint: checkHint(input.hint ?? ''),
    expiresAt: checkExpiresAt(input.expiresAt ?? null, context),
  };
}

/**
 * A workload's SPIFFE ID (an entry's, or a minted SVID's): in the server's trust domain, with a path, and not a path
 * reserved for Sigil's own servers and agents.
 *
 * @throws AppError `invalid_argument` naming `field` and the broken rule
 */
export function checkWorkloadId(field: string, value: unknown, trustDomain: TrustDomain): SpiffeId {
  const id = checkMemberId(field, value, trustDomain);
  if (isReservedSigilPath(id.path)) {
    throw invalid(`${field}: path ${quote(id.path)} is reserved for sigil servers and agents`);
  }
  return id;
}

function checkMemberId(field: string, value: unknown, trustDomain: TrustDomain): SpiffeId {
  if (typeof value !== 'string') throw invalid(`${field}: must be a string`);
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(value);
  } catch (error) {
    if (error instanceof SpiffeError) throw invalid(`${field}: ${error.message}`);
    throw error;
  }
  if (!id.isMemberOf(trustDomain)) {
    throw invalid(`${field}: must be in trust domain ${quote(trustDomain.name)}, got ${quote(id.trustDomain.name)}`);
  }
  if (id.isRoot()) {
    throw invalid(`${field}: must have a path; ${quote(id.toString())} names the trust domain's authority`);
  }
  return id;
}

/**
 * A selector written `type:value` (a listing filter), checked by the selector rules.
 *
 * @throws AppError `invalid_argument` naming `field`, e.g. `selector.0: must look like type:value ...`
 */
export function parseSelectorQuery(text: string, field: string): Selector {
  try {
    return parseSelector(text);
  } catch (error) {
    throw selectorProblem(error, field);
  }
}

function selectorProblem(error: unknown, at: string): unknown {
  if (!(error instanceof SelectorError)) return error;
  return invalid(`${at}${error.part === 'selector' ? '' : `.${error.part}`}: ${error.problem}`);
}

function checkSelectors(selectors: unknown): Selector[] {
  if (!Array.isArray(selectors)) throw invalid('selectors: must be a list');
  if (selectors.length === 0) throw invalid('selectors: at least one selector is required');
  if (selectors.length > ENTRY_LIMITS.maxSelectors) {
    throw invalid(`selectors: at most ${ENTRY_LIMITS.maxSelectors} selectors, got ${selectors.length}`);
  }
  const seen = new Set<string>();
  const checked = selectors.map((selector: unknown, index): Selector => {
    let valid: Selector;
    try {
      valid = checkSelector(selector);
    } catch (error) {
      throw selectorProblem(error, `selectors.${index}`);
    }
    if (seen.has(selectorKey(valid)))
      throw invalid(`selectors.${index}: duplicate selector ${quote(formatSelector(valid))}`);
    seen.add(selectorKey(valid));
    return valid;
  });
  return checked.sort(compareSelectors);
}

/**
 * A TTL in whole seconds: 0 (the server default) or within `bounds` (an entry's, or a minted SVID's).
 *
 * @throws AppError `invalid_argument` naming `field` and the bounds
 */
export function checkTtl(field: string, value: unknown, bounds: { min: number; max: number }): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw invalid(`${field}: must be a whole number of seconds`);
  }
  if (value !== 0 && (value < bounds.min || value > bounds.max)) {
    throw invalid(
      `${field}: must be 0 (the server default) or from ${bounds.min} to ${bounds.max} seconds, got ${value}`,
    );
  }
  return value;
}

/**
 * DNS names for an X.509-SVID (an entry's, or a minted SVID's CSR's): at most {@link ENTRY_LIMITS.maxDnsNames}, each
 * valid by the signer's rule, no duplicates; returned lowercase.
 *
 * @throws AppError `invalid_argument` naming the name (`dns_names.1: …`)
 */
export function checkDnsNames(names: unknown): string[] {
  if (!Array.isArray(names)) throw invalid('dns_names: must be a list');
  if (names.length > ENTRY_LIMITS.maxDnsNames) {
    throw invalid(`dns_names: at most ${ENTRY_LIMITS.maxDnsNames} names, got ${names.length}`);
  }
  const seen = new Set<string>();
  return names.map((name: unknown, index) => {
    if (typeof name !== 'string') throw invalid(`dns_names.${index}: must be a string`);
    // The signer's own rule (libs/pki), so that no entry is stored whose SVID could never be signed.
    try {
      validateDnsName(name, `dns_names.${index}`);
    } catch (error) {
      if (error instanceof PkiError) throw invalid(error.message);
      throw error;
    }
    // DNS names are case-insensitive; they are kept lowercase. Lowercased only once known to be ASCII: Unicode case
    // mapping would turn the Kelvin sign (U+212A) into a plain "k".
    const lower = name.toLowerCase();
    if (seen.has(lower)) throw invalid(`dns_names.${index}: duplicate dns name ${quote(lower)}`);
    seen.add(lower);
    return lower;
  });
}

function checkFederatesWith(trustDomains: unknown, ours: TrustDomain): string[] {
  if (!Array.isArray(trustDomains)) throw invalid('federates_with: must be a list');
  if (trustDomains.length > ENTRY_LIMITS.maxFederatesWith) {
    throw invalid(`federates_with: at most ${ENTRY_LIMITS.maxFederatesWith} trust domains, got ${trustDomains.length}`);
  }
  const seen = new Set<string>();
  const names = trustDomains.map((value: unknown, index) => {
    const at = `federates_with.${index}`;
    if (typeof value !== 'string') throw invalid(`${at}: must be a string`);
    let trustDomain: TrustDomain;
    try {
      // A name (`example.org`) or its SPIFFE ID (`spiffe://example.org`), as SPIRE accepts.
      trustDomain = TrustDomain.parse(value);
    } catch (error) {
      if (error instanceof SpiffeError) throw invalid(`${at}: ${error.message}`);
      throw error;
    }
    if (trustDomain.equals(ours))
      throw invalid(`${at}: must not be this server's own trust domain ${quote(ours.name)}`);
    if (seen.has(trustDomain.name)) throw invalid(`${at}: duplicate trust domain ${quote(trustDomain.name)}`);
    seen.add(trustDomain.name);
    return trustDomain.name;
  });
  return names.sort();
}

function checkBoolean(field: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalid(`${field}: must be true or false`);
  return value;
}

function checkHint(hint: unknown): string {
  if (typeof hint !== 'string') throw invalid('hint: must be a string');
  if (utf8LongerThan(hint, ENTRY_LIMITS.maxHintBytes)) {
    throw invalid(`hint: must be at most ${ENTRY_LIMITS.maxHintBytes} bytes`);
  }
  const problem = storedTextProblem(hint);
  if (problem !== undefined) throw invalid(`hint: ${problem}`);
  return hint;
}

function checkExpiresAt(value: unknown, context: EntryRuleContext): Date | null {
  if (value === null) return null;
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) throw invalid('expires_at: must be a valid time');
  if (context.checkExpiry && value.getTime() <= context.now.getTime()) {
    throw invalid(`expires_at: must be in the future, got ${value.toISOString()}`);
  }
  return value;
}
