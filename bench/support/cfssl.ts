/**
 * The comparison signer: Debian's CloudFlare cfssl (`cfssl serve`) with a P-256 CA made here by the openssl CLI,
 * signing CSRs over plain HTTP (`POST /api/v1/cfssl/sign`), driven by wrk with a Lua script.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Harness } from './harness.js';
import { type ManagedProcess } from './managed-process.js';

export const CFSSL_INSTALL_HINT = 'apt-get update && apt-get install -y golang-cfssl wrk';

/** The tools the cfssl half needs that are not on PATH (empty when it can run). */
export function missingCfsslTools(): string[] {
  return ['cfssl', 'wrk'].filter((tool) => {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
}

/** cfssl's version line, e.g. `1.2.0 (go1.19.8)`. */
export function cfsslVersion(): string {
  const text = execFileSync('cfssl', ['version'], { encoding: 'utf8' });
  const version = /Version:\s*(\S+)/.exec(text)?.[1] ?? 'unknown';
  const runtime = /Runtime:\s*(\S+)/.exec(text)?.[1];
  return runtime ? `${version} (${runtime})` : version;
}

export interface CfsslServer {
  readonly process: ManagedProcess;
  readonly port: number;
  readonly caPem: string;
}

/**
 * Makes an ECDSA P-256 CA with openssl (the key type of Sigil's default CA), then starts `cfssl serve` on
 * 127.0.0.1:`port` with `GOMAXPROCS=1` under `taskset -c cpus`, signing with a 1 h profile of the X.509-SVID key
 * usages, logging warnings only (as the Sigil server logs nothing per request at its default level).
 */
/**
 * Starts `cfssl serve` under `taskset -c cpus` with `GOMAXPROCS=gomaxprocs` (1 by default: one core; the number of
 * CPUs for the whole machine).
 */
export async function startCfssl(harness: Harness, port: number, cpus: string, gomaxprocs = 1): Promise<CfsslServer> {
  const dir = harness.scratch;
  const caKey = join(dir, 'cfssl-ca.key');
  const caCert = join(dir, 'cfssl-ca.pem');
  const config = join(dir, 'cfssl-config.json');
  execFileSync(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'],
      ...['-keyout', caKey, '-out', caCert, '-days', '1', '-subj', '/O=Sigil bench/CN=cfssl comparison CA'],
      ...['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    ],
    { stdio: 'ignore' },
  );
  const usages = ['digital signature', 'key encipherment', 'server auth', 'client auth'];
  await writeFile(config, JSON.stringify({ signing: { default: { expiry: '1h', usages } } }));
  const args = ['-c', cpus, 'cfssl', 'serve', '-address', '127.0.0.1', '-port', String(port)];
  args.push('-ca', caCert, '-ca-key', caKey, '-config', config, '-loglevel', '2');
  const server = harness.spawn('cfssl', 'taskset', args, { GOMAXPROCS: String(gomaxprocs) });
  await waitForPort(server, port, 30_000);
  return { process: server, port, caPem: await readFile(caCert, 'utf8') };
}

async function waitForPort(server: ManagedProcess, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!server.isRunning) throw new Error(`cfssl exited before listening:\n${server.recentOutput()}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port }, () => {
        socket.end();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (open) return;
    await sleep(100);
  }
  throw new Error(`cfssl did not listen on 127.0.0.1:${port} within ${timeoutMs / 1000} s`);
}

/** Signs one CSR with cfssl and checks the answer: a certificate for the CSR's key, issued by our CA. */
export async function checkCfsslSigns(server: CfsslServer, csrPem: string, spkiDer: Uint8Array): Promise<void> {
  const response = await fetch(`http://127.0.0.1:${server.port}/api/v1/cfssl/sign`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ certificate_request: csrPem }),
  });
  const answer = (await response.json()) as { success?: boolean; result?: { certificate?: string }; errors?: unknown };
  if (!answer.success || !answer.result?.certificate) {
    throw new Error(`cfssl sign failed (${response.status}): ${JSON.stringify(answer.errors)}`);
  }
  const leaf = new X509Certificate(answer.result.certificate);
  const ca = new X509Certificate(server.caPem);
  if (!leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) throw new Error('cfssl certificate is not signed by its CA');
  if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(spkiDer)) {
    throw new Error("cfssl certificate does not carry the CSR's key");
  }
}

/** What one wrk run counted: successful signatures, failed requests and wrk's own duration. */
export interface WrkResult {
  readonly signatures: number;
  readonly failures: number;
  readonly seconds: number;
}

/** Writes the wrk Lua script that posts the CSRs in turn and counts answers with `"success":true`. */
export async function writeWrkScript(harness: Harness, csrPems: readonly string[]): Promise<string> {
  const path = join(harness.scratch, 'cfssl-sign.lua');
  // Lua long brackets hold the JSON bodies verbatim (PEM and JSON never contain "]==]").
  const bodies = csrPems.map((pem) => `[==[${JSON.stringify({ certificate_request: pem })}]==]`).join(',\n  ');
  const script = `-- Generated by bench/support/cfssl.ts: POST each CSR in turn, count successes per thread.
local bodies = {
  ${bodies}
}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) next_body = 0; ok = 0; failed = 0 end
function request()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", "/api/v1/cfssl/sign", { ["Content-Type"] = "application/json" }, bodies[next_body])
end
function response(status, headers, body)
  if status == 200 and string.find(body, '"success":true', 1, true) then ok = ok + 1 else failed = failed + 1 end
end
function done(summary, latency, requests)
  local total_ok, total_failed = 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_failed = total_failed + thread:get("failed")
  end
  local errors = summary.errors
  local socket_errors = errors.connect + errors.read + errors.write + errors.timeout
  io.write(string.format("SIGIL_BENCH_WRK ok=%d failed=%d socket_errors=%d duration_us=%d\\n",
    total_ok, total_failed, socket_errors, summary.duration))
end
`;
  await writeFile(path, script);
  return path;
}

/** Runs wrk (one thread, `connections` connections) under `taskset -c cpus` for `seconds` against cfssl. */
export async function runWrk(
  harness: Harness,
  options: { port: number; script: string; seconds: number; connections: number; cpus: string },
): Promise<WrkResult> {
  const args = ['-c', options.cpus, 'wrk', '-t1', `-c${options.connections}`, `-d${options.seconds}s`];
  args.push('--timeout', '10s', '-s', options.script, `http://127.0.0.1:${options.port}/api/v1/cfssl/sign`);
  const wrk = harness.spawn('wrk', 'taskset', args);
  const line = await wrk.waitForLine(/^SIGIL_BENCH_WRK /, (options.seconds + 30) * 1000, "wrk's result line");
  await wrk.exited;
  const field = (name: string): number => Number(new RegExp(`${name}=(\\d+)`).exec(line)?.[1]);
  const socketErrors = field('socket_errors');
  return {
    signatures: field('ok'),
    failures: field('failed') + socketErrors,
    seconds: field('duration_us') / 1e6,
  };
}
