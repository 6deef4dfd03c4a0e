import { afterAll, describe, expect, it } from 'vitest';
import { formatReport, fuzzRuns, type FuzzReport } from './harness.js';
import { fuzzAdminApi } from './targets/admin-api.fuzz.js';
import { fuzzAgentApi } from './targets/agent-api.fuzz.js';
import { fuzzBundle } from './targets/bundle.fuzz.js';
import { fuzzConfig } from './targets/config.fuzz.js';
import { fuzzCsr } from './targets/csr.fuzz.js';
import { fuzzJwtSvid } from './targets/jwt-svid.fuzz.js';
import { fuzzSelectors } from './targets/selectors.fuzz.js';
import { fuzzSpiffeId } from './targets/spiffe-id.fuzz.js';
import { fuzzWorkloadApi } from './targets/workload-api.fuzz.js';

// `npm test` runs a slice of each target; `npm run fuzz` runs the same properties with FUZZ_RUNS (100,000) cases.
const RUNS = fuzzRuns();
// A 100,000-case run of a slow target takes minutes on a shared machine; the slice takes seconds.
const TIMEOUT_MS = Math.max(60_000, RUNS * 20);

const TARGETS: [string, (runs: number) => Promise<FuzzReport>][] = [
  ['SPIFFE IDs and trust domains', fuzzSpiffeId],
  ['CSRs, DER and PEM (three parsers, compared)', fuzzCsr],
  ['JWT-SVIDs, validated and insecure', fuzzJwtSvid],
  ['trust bundles: JWKS text, bytes and documents, PEM, DER', fuzzBundle],
  ['selectors: server entry rules and filters, agent entry parser and matcher', fuzzSelectors],
  ["agent API bodies: the contract's batch request parser and answer parsers", fuzzAgentApi],
  ['config files of the agent and the server, and the trust bundle file', fuzzConfig],
  ['Workload API requests: protobuf decode, security header, handler validation', fuzzWorkloadApi],
  ['admin API and attestation bodies, paths and queries through the real app', fuzzAdminApi],
];

describe(`fuzzing parsers of untrusted input (${RUNS} cases per target; FUZZ_RUNS to change)`, () => {
  const reports: FuzzReport[] = [];
  afterAll(() => {
    console.log(['fuzz summary:', ...reports.map(formatReport)].join('\n'));
  });

  it.each(TARGETS)(
    '%s',
    async (_name, run) => {
      const report = await run(RUNS);
      reports.push(report);
      // Printed as each target ends too: a 100,000-case run takes a while.
      console.log(formatReport(report));
      expect(report.failure).toBeUndefined();
      expect(report.cases).toBe(RUNS);
    },
    TIMEOUT_MS,
  );
});
