import { afterAll, describe, expect, it } from 'vitest';
import { formatReport, fuzzRuns, type FuzzReport } from './harness.js';
import { fuzzCsr } from './targets/csr.fuzz.js';
import { fuzzJwtSvid } from './targets/jwt-svid.fuzz.js';
import { fuzzSpiffeId } from './targets/spiffe-id.fuzz.js';

const RUNS = fuzzRuns();
// A 100,000-case run of a slow target takes minutes on a shared machine; the slice takes seconds.
const TIMEOUT_MS = Math.max(60_000, RUNS * 20);
const reports: FuzzReport[] = [];

async function fuzz(run: (runs: number) => Promise<FuzzReport>): Promise<void> {
  const report = await run(RUNS);
  reports.push(report);
  expect(report.failure).toBeUndefined();
  expect(report.cases).toBe(RUNS);
}

describe(`fuzzing parsers of untrusted input (${RUNS} cases per target; FUZZ_RUNS to change)`, () => {
  afterAll(() => {
    console.log(['fuzz summary:', ...reports.map(formatReport)].join('\n'));
  });

  it('SPIFFE IDs and trust domains', () => fuzz(fuzzSpiffeId), TIMEOUT_MS);
  it('CSRs, DER and PEM (three parsers, compared)', () => fuzz(fuzzCsr), TIMEOUT_MS);
  it('JWT-SVIDs, validated and insecure', () => fuzz(fuzzJwtSvid), TIMEOUT_MS);
});
