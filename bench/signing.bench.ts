/**
 * `npm run bench`: X.509-SVID issuance speed on one core, in one process, in alternating rounds so that load from
 * elsewhere on the machine hits every measure alike. Each round measures:
 *
 * - raw: ECDSA P-256 `crypto.sign` of a leaf-sized TBSCertificate (the floor for any signer);
 * - leaf: `X509SvidSigner.sign`, leaf build + sign from an already verified public key;
 * - csr→leaf: `X509SvidSigner.signCsr`, the complete CSR PEM → verified key → signed leaf path.
 *
 * A round gives each measure about one second, cut into 20 slices that take turns. Every rate is printed with its ratio to the raw rate of the same round; the summary is the median over rounds.
 * With `--json` the last line is one JSON object: raw_sign_per_s, leaf_per_s, leaf_ratio, csr_to_leaf_per_s,
 * csr_to_leaf_ratio. Options: `--rounds N` (default 5), `--seconds S` per measure (default 1).
 */
import { KeyObject, sign } from 'node:crypto';
import { SpiffeId, TrustDomain } from '@sigil/spiffe';
import { createCsr, createRootCa, generateKeyPair, parseCsrFast, X509SvidSigner } from '@sigil/pki';

interface Options {
  readonly rounds: number;
  readonly seconds: number;
  readonly json: boolean;
}

function parseOptions(argv: readonly string[]): Options {
  const options = { rounds: 5, seconds: 1, json: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--json') options.json = true;
    else if (arg === '--rounds' || arg === '--seconds') {
      const value = Number(argv[++i]);
      if (!(value > 0) || (arg === '--rounds' && !Number.isInteger(value))) {
        throw new Error(`${arg} must be a positive ${arg === '--rounds' ? 'integer' : 'number'}`);
      }
      options[arg === '--rounds' ? 'rounds' : 'seconds'] = value;
    } else {
      throw new Error(`unknown option ${arg}; usage: signing.bench.js [--json] [--rounds N] [--seconds S]`);
    }
  }
  return options;
}

/** Operations and nanoseconds accumulated by one measure over the slices of a round. */
interface Tally {
  operations: number;
  nanoseconds: bigint;
}

/** Runs `fn` repeatedly for about `seconds` (at most `maxOperations` times) and adds the work done to `tally`. */
async function runSlice(tally: Tally, seconds: number, fn: () => unknown, maxOperations: number): Promise<void> {
  const budget = BigInt(Math.round(seconds * 1e9));
  const start = process.hrtime.bigint();
  let elapsed = 0n;
  for (let operations = 0; elapsed < budget && operations < maxOperations; operations++) {
    const result = fn();
    if (result instanceof Promise) await result;
    tally.operations++;
    elapsed = process.hrtime.bigint() - start;
  }
  tally.nanoseconds += elapsed;
}

const perSecond = (tally: Tally): number => tally.operations / (Number(tally.nanoseconds) / 1e9);

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const SLICES_PER_ROUND = 20;

const format = (perSecond: number): string => `${Math.round(perSecond).toLocaleString('en-US').padStart(7)}/s`;
const ratio = (value: number, raw: number): string => (value / raw).toFixed(3);

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const log = (line: string): void => console.log(line);

  const trustDomain = TrustDomain.parse('example.org');
  const now = new Date();
  const caKeys = await generateKeyPair('ec-p256');
  const ca = await createRootCa({ trustDomain, keys: caKeys, now });
  const signer = X509SvidSigner.create({ certificate: ca.der, privateKey: ca.privateKey });
  const workloadKeys = await generateKeyPair('ec-p256');
  const spiffeId = SpiffeId.parse('spiffe://example.org/ns/payments/sa/api');
  const csr = await createCsr({ keys: workloadKeys, spiffeId });
  const { spkiDer } = parseCsrFast(csr.pem);
  const params = { spiffeId, ttlSeconds: 3600, now };

  // The raw measure signs bytes of a real TBSCertificate, so it hashes as much data as the leaf path does.
  const sample = signer.sign({ ...params, spkiDer });
  if (sample[1] !== 0x82 || sample[5] !== 0x82) throw new Error('unexpected leaf size: expected 2-byte DER lengths');
  const tbs = sample.subarray(4, 8 + sample.readUInt16BE(6));
  const caKey = KeyObject.from(ca.privateKey);

  const measures = {
    raw: () => sign('sha256', tbs, caKey),
    leaf: () => signer.sign({ ...params, spkiDer }),
    csrToLeaf: () => signer.signCsr(csr.pem, params),
  };
  // Warm up every path (JIT, OpenSSL caches) before measuring.
  for (const fn of Object.values(measures)) await runSlice({ operations: 0, nanoseconds: 0n }, 0.2, fn, 2000);

  log(`node ${process.version}, ${options.rounds} rounds of ${options.seconds} s per measure, one core`);
  log(`leaf: ${sample.length} bytes DER, ECDSA P-256 CA, SPIFFE ID ${spiffeId.toString()}`);
  const results: Array<{ raw: number; leaf: number; csrToLeaf: number }> = [];
  for (let round = 1; round <= options.rounds; round++) {
    // Each measure's second is cut into slices that take turns, in an order that alternates, so that load from the
    // rest of the machine falls on every measure of a round alike and the ratios stay comparable.
    const tallies = {
      raw: { operations: 0, nanoseconds: 0n },
      leaf: { operations: 0, nanoseconds: 0n },
      csrToLeaf: { operations: 0, nanoseconds: 0n },
    };
    for (let slice = 0; slice < SLICES_PER_ROUND; slice++) {
      const order: Array<keyof typeof measures> =
        slice % 2 === 0 ? ['raw', 'leaf', 'csrToLeaf'] : ['csrToLeaf', 'leaf', 'raw'];
      for (const name of order) {
        await runSlice(tallies[name], options.seconds / SLICES_PER_ROUND, measures[name], Number.POSITIVE_INFINITY);
      }
    }
    const current = {
      raw: perSecond(tallies.raw),
      leaf: perSecond(tallies.leaf),
      csrToLeaf: perSecond(tallies.csrToLeaf),
    };
    results.push(current);
    log(
      `round ${round}: raw sign ${format(current.raw)} | leaf ${format(current.leaf)} (${ratio(current.leaf, current.raw)})` +
        ` | csr→leaf ${format(current.csrToLeaf)} (${ratio(current.csrToLeaf, current.raw)})`,
    );
  }

  const summary = {
    raw_sign_per_s: Math.round(median(results.map((r) => r.raw))),
    leaf_per_s: Math.round(median(results.map((r) => r.leaf))),
    leaf_ratio: Number(median(results.map((r) => r.leaf / r.raw)).toFixed(4)),
    csr_to_leaf_per_s: Math.round(median(results.map((r) => r.csrToLeaf))),
    csr_to_leaf_ratio: Number(median(results.map((r) => r.csrToLeaf / r.raw)).toFixed(4)),
  };
  log('median over rounds:');
  log(`  raw ECDSA P-256 crypto.sign      ${format(summary.raw_sign_per_s)}`);
  log(
    `  leaf build + sign (fast)         ${format(summary.leaf_per_s)}  ratio ${summary.leaf_ratio.toFixed(3)} (target ≥ 0.5)`,
  );
  log(
    `  csr pem → leaf (fast)            ${format(summary.csr_to_leaf_per_s)}  ratio ${summary.csr_to_leaf_ratio.toFixed(3)} (target ≥ 0.09)`,
  );
  if (options.json) log(JSON.stringify(summary));
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
