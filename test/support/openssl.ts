/**
 * Test helper: checks certificates with the real `openssl` CLI (not with our own code). Inputs are PEM text, DER
 * bytes or anything with `rawData` (a @peculiar/x509 certificate); they are written to a fresh temporary directory
 * under os.tmpdir(), which is removed afterwards.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A certificate (or CSR) as PEM text, DER bytes, or a parsed object exposing its DER as `rawData`. */
export type OpensslInput = string | Uint8Array | { readonly rawData: ArrayBuffer };

/** The outcome of one openssl run. */
export interface OpensslResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** Files read back from the temporary directory after the run (those named in `readBack`). */
  readonly files: Record<string, string>;
}

function toPemText(input: OpensslInput, label: string): string {
  if (typeof input === 'string') return input;
  const der = input instanceof Uint8Array ? input : new Uint8Array(input.rawData);
  const lines =
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/**
 * Runs `openssl <args>` in a temporary directory holding `files` (name → content); `{name}` in args is replaced by
 * the file's path, and the files named in `readBack` are returned. Never throws on a non-zero exit: the code is in
 * the result.
 */
export async function runOpenssl(
  args: readonly string[],
  files: Record<string, string> = {},
  readBack: readonly string[] = [],
): Promise<OpensslResult> {
  const dir = await mkdtemp(join(tmpdir(), 'sigil-openssl-'));
  try {
    for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content);
    const resolved = args.map((arg) => arg.replace(/\{([\w.-]+)\}/g, (_, name: string) => join(dir, name)));
    const run = await new Promise<Omit<OpensslResult, 'files'>>((resolve, reject) => {
      const child = execFile('openssl', resolved, { cwd: dir, timeout: 20_000 }, (error, stdout, stderr) => {
        if (error && typeof error.code !== 'number') {
          reject(error);
          return;
        }
        resolve({ code: error ? Number(error.code) : 0, stdout, stderr });
      });
      // Nothing on stdin: a command that reads it (`s_client` after its handshake) sees its end and exits.
      child.stdin?.end();
    });
    const read: Record<string, string> = {};
    if (run.code === 0) {
      for (const name of readBack) read[name] = await readFile(join(dir, name), 'utf8');
    }
    return { ...run, files: read };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** What {@link opensslVerify} checks: a leaf against a trusted root, through optional untrusted intermediates. */
export interface OpensslVerifyParams {
  readonly root: OpensslInput;
  readonly intermediates?: readonly OpensslInput[];
  readonly leaf: OpensslInput;
  /** Verification time (`-attime`); default: the current time. */
  readonly at?: Date;
  /** `-purpose`, e.g. `sslserver` or `sslclient`. */
  readonly purpose?: string;
}

/**
 * `openssl verify -x509_strict -CAfile root.pem [-untrusted inter.pem] leaf.pem`. `ok` is true only when openssl
 * exits 0 and prints `<leaf>: OK`; `output` holds stdout and stderr for assertion messages.
 */
export async function opensslVerify(params: OpensslVerifyParams): Promise<{ ok: boolean; output: string }> {
  const files: Record<string, string> = {
    'root.pem': toPemText(params.root, 'CERTIFICATE'),
    'leaf.pem': toPemText(params.leaf, 'CERTIFICATE'),
  };
  const args = ['verify', '-x509_strict', '-CAfile', '{root.pem}'];
  if (params.intermediates && params.intermediates.length > 0) {
    files['untrusted.pem'] = params.intermediates.map((c) => toPemText(c, 'CERTIFICATE')).join('');
    args.push('-untrusted', '{untrusted.pem}');
  }
  if (params.at) args.push('-attime', String(Math.floor(params.at.getTime() / 1000)));
  if (params.purpose) args.push('-purpose', params.purpose);
  args.push('{leaf.pem}');
  const result = await runOpenssl(args, files);
  const output = `${result.stdout}${result.stderr}`;
  return { ok: result.code === 0 && /leaf\.pem: OK\s*$/.test(result.stdout), output };
}

/** `openssl x509 -noout -text` of a certificate; throws when openssl cannot read it. */
export async function opensslText(certificate: OpensslInput): Promise<string> {
  const result = await runOpenssl(['x509', '-noout', '-text', '-in', '{cert.pem}'], {
    'cert.pem': toPemText(certificate, 'CERTIFICATE'),
  });
  if (result.code !== 0) throw new Error(`openssl x509 failed (${result.code}): ${result.stderr}`);
  return result.stdout;
}

/** `openssl req -verify -noout -text` of a CSR: `verified` is true when openssl checked its self-signature. */
export async function opensslRequest(csr: OpensslInput): Promise<{ verified: boolean; text: string }> {
  const result = await runOpenssl(['req', '-verify', '-noout', '-text', '-in', '{csr.pem}'], {
    'csr.pem': toPemText(csr, 'CERTIFICATE REQUEST'),
  });
  const output = `${result.stdout}${result.stderr}`;
  return { verified: result.code === 0 && /verify OK/i.test(output), text: result.stdout };
}

/**
 * A self-signed P-256 certificate and its key made by `openssl req -x509` (`extensions`: `-addext` values, e.g.
 * `subjectAltName=DNS:localhost`), as PEM; throws with openssl's output when it fails.
 */
export async function opensslSelfSigned(
  subject: string,
  extensions: readonly string[] = [],
): Promise<{ certificatePem: string; keyPem: string }> {
  const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2'];
  args.push('-subj', subject, ...extensions.flatMap((extension) => ['-addext', extension]));
  const made = await runOpenssl([...args, '-keyout', '{key.pem}', '-out', '{cert.pem}'], {}, ['key.pem', 'cert.pem']);
  if (made.code !== 0) throw new Error(`openssl req -x509 failed: ${made.stderr}`);
  return { certificatePem: made.files['cert.pem']!, keyPem: made.files['key.pem']! };
}
