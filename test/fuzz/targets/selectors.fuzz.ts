import { TrustDomain } from '@sigil/spiffe';
import fc from 'fast-check';
import { AgentApiProtocolError, parseAgentEntry } from '@sigil/agent-api';
import { matchesAllSelectors, type Selector } from '@sigil/runtime';
import { AppError } from '../../../apps/server/src/common/errors.js';
import { toEntryFilter, type EntryFilterQueryDto } from '../../../apps/server/src/entries/entry.dto.js';
import { validateEntry } from '../../../apps/server/src/entries/entry-rules.js';
import type { EntryInput } from '../../../apps/server/src/entries/entry.js';
import { anyString, mutatedJson, mutatedText } from '../arbitraries.js';
import { ContractViolation, Outcomes, runTarget, tryParse, type FuzzReport } from '../harness.js';

const SELECTOR_TYPE = /^[A-Za-z0-9_.-]{1,64}$/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
const CONTEXT = {
  trustDomain: TrustDomain.parse('example.org'),
  now: new Date('2030-01-01T00:00:00Z'),
  checkExpiry: true,
};

const SELECTORS = [
  { type: 'unix', value: 'uid:1000' },
  { type: 'unix', value: 'path:/usr/bin/env' },
  { type: 'k8s', value: 'ns:default' },
  { type: 'docker', value: 'label:a=b:c' },
];
const ENTRY = {
  id: '0b7e6f3a-1f2c-4d5e-8a9b-0c1d2e3f4a5b',
  spiffe_id: 'spiffe://example.org/web',
  parent_id: 'spiffe://example.org/sigil/agent/join_token/a1',
  selectors: SELECTORS,
  x509_svid_ttl: 0,
  jwt_svid_ttl: 0,
  dns_names: ['web.example.org'],
  federates_with: ['other.org'],
  admin: false,
  downstream: false,
  hint: '',
  expires_at: null,
  revision_number: 3,
  created_at: '2030-01-01T00:00:00.000Z',
};

const isAppError = (error: unknown): boolean => error instanceof AppError && error.kind === 'invalid_argument';
const isProtocolError = (error: unknown): boolean => error instanceof AgentApiProtocolError;

function check(condition: boolean, message: string): void {
  if (!condition) throw new ContractViolation(message);
}

const key = (selector: Selector): string => JSON.stringify([selector.type, selector.value]);

/**
 * Selectors on both sides: the server's entry rules (`validateEntry` on mutated entries), its `type:value` query
 * filter (`toEntryFilter`), the agent's parser of synced entries (`parseAgentEntry`) and the agent's matcher
 * (`matchesAllSelectors`). Only `AppError` `invalid_argument` (server) and `AgentApiProtocolError` (agent) may be
 * thrown; accepted selectors follow the rules; the matcher agrees with set inclusion on selectors the server accepts.
 */
export async function fuzzSelectors(runs: number): Promise<FuzzReport> {
  const entry = mutatedJson([ENTRY, { ...ENTRY, selectors: [SELECTORS[0]] }], 4);
  const selectorText = fc.array(fc.oneof(mutatedText(['unix:uid:1000', 'k8s:ns:default', 'a:b'], 3), anyString), {
    maxLength: 4,
  });
  const present = fc.array(fc.oneof(fc.constantFrom(...SELECTORS), mutatedJson(SELECTORS, 2)), { maxLength: 6 });
  const outcomes = new Outcomes();
  return runTarget(
    'selectors',
    fc.tuple(entry, selectorText, present),
    async ([document, filters, presentRaw]) => {
      const fields = (typeof document === 'object' && document !== null ? document : {}) as Record<string, unknown>;
      const input = {
        spiffeId: fields['spiffe_id'],
        parentId: fields['parent_id'],
        selectors: fields['selectors'],
        x509SvidTtl: fields['x509_svid_ttl'],
        jwtSvidTtl: fields['jwt_svid_ttl'],
        dnsNames: fields['dns_names'],
        federatesWith: fields['federates_with'],
        hint: fields['hint'],
      } as unknown as EntryInput;
      const valid = await tryParse('validateEntry', isAppError, () => validateEntry(input, CONTEXT));
      if (valid !== undefined) {
        for (const selector of valid.selectors) {
          check(SELECTOR_TYPE.test(selector.type), `accepted selector type ${JSON.stringify(selector.type)}`);
          check(selector.value.length > 0 && !CONTROL.test(selector.value), 'accepted selector value');
          check(Buffer.byteLength(selector.value) <= 1024, 'accepted a selector value over 1024 bytes');
        }
        check(new Set(valid.selectors.map(key)).size === valid.selectors.length, 'accepted duplicate selectors');
      }

      const filter = await tryParse('toEntryFilter', isAppError, () =>
        toEntryFilter({ selector: filters } as EntryFilterQueryDto),
      );
      filter?.selectors?.forEach((selector, i) => {
        check(`${selector.type}:${selector.value}` === filters[i], `filter ${filters[i]} split wrongly`);
        check(selector.type.length > 0 && selector.value.length > 0, 'filter with an empty part');
      });

      const synced = await tryParse('parseAgentEntry', isProtocolError, () => parseAgentEntry(document));
      const presentSelectors = Array.isArray(presentRaw)
        ? presentRaw.filter(
            (each): each is Selector =>
              typeof each === 'object' &&
              each !== null &&
              typeof (each as Partial<Selector>).type === 'string' &&
              typeof (each as Partial<Selector>).value === 'string',
          )
        : [];
      const required = synced?.selectors ?? valid?.selectors ?? [];
      const matched = matchesAllSelectors(required, presentSelectors);
      outcomes.add(
        `entry ${valid ? 'valid' : 'refused'}, synced ${synced ? 'parsed' : 'refused'}, ${matched ? 'matched' : 'no match'}`,
      );
      // The server's rules keep ':' out of selector types, so `type:value` is unambiguous for what it accepts.
      if (required.every((selector) => SELECTOR_TYPE.test(selector.type))) {
        const have = new Set(presentSelectors.filter((selector) => SELECTOR_TYPE.test(selector.type)).map(key));
        const expected = required.length > 0 && required.every((selector) => have.has(key(selector)));
        const ambiguous = presentSelectors.some((selector) => !SELECTOR_TYPE.test(selector.type));
        if (!ambiguous) check(matched === expected, `matcher says ${matched}, set inclusion says ${expected}`);
      }
    },
    runs,
    outcomes,
  );
}
