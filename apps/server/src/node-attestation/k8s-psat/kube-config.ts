import { open } from 'node:fs/promises';
import { isIP } from 'node:net';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { load } from 'js-yaml';

/** How to reach one cluster's API server and prove who we are to it. */
export interface KubeConnection {
  /** `https://host:port`, with the path prefix of a proxy if any. */
  readonly server: URL;
  /** PEM of the CAs the API server's certificate must chain to; undefined: the system's CAs. */
  readonly ca: string | undefined;
  /** kubeconfig `insecure-skip-tls-verify`: the API server's certificate is not checked. */
  readonly insecureSkipTlsVerify: boolean;
  /** kubeconfig `tls-server-name`: the name the API server's certificate is checked against. */
  readonly tlsServerName: string | undefined;
  readonly clientCertificate: { readonly certificate: string; readonly key: string } | undefined;
  /** Reads the bearer token for each call (token files rotate: the in-cluster token is renewed by the kubelet). */
  readonly bearerToken: (() => Promise<string>) | undefined;
  /** Where it came from, for logs and errors: the kubeconfig path and context, or `in-cluster`. */
  readonly source: string;
}

/** A kubeconfig or in-cluster setup that cannot be used; the message names the file and field. */
export class KubeConfigError extends Error {
  override readonly name = 'KubeConfigError';
}

/** Where the kubelet mounts a pod's service account credentials. */
export const IN_CLUSTER_SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** Largest kubeconfig, CA, certificate, key or token file read. */
const MAX_FILE_BYTES = 1024 * 1024;

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** Reads a small file; errors name the file and what it is, never its content. */
async function readSmallFile(path: string, what: string): Promise<Buffer> {
  let file;
  try {
    file = await open(path, 'r');
  } catch (error) {
    throw new KubeConfigError(`${what} ${path}: cannot be read (${(error as NodeJS.ErrnoException).code ?? error})`);
  }
  try {
    const buffer = Buffer.alloc(MAX_FILE_BYTES + 1);
    const { bytesRead } = await file.read(buffer, 0, buffer.length, 0);
    if (bytesRead > MAX_FILE_BYTES) throw new KubeConfigError(`${what} ${path}: larger than ${MAX_FILE_BYTES} bytes`);
    return buffer.subarray(0, bytesRead);
  } finally {
    await file.close();
  }
}

/** A token file's content, checked: a token is one line of printable characters. */
async function readTokenFile(path: string, what: string): Promise<string> {
  const token = (await readSmallFile(path, what)).toString('utf8').trim();
  if (token.length === 0) throw new KubeConfigError(`${what} ${path}: is empty`);
  if (!/^[\x21-\x7e]+$/.test(token)) throw new KubeConfigError(`${what} ${path}: is not a bearer token (one line)`);
  return token;
}

/**
 * The API server URL: https only (a bearer token must never cross the network in clear), no credentials or query.
 *
 * @throws KubeConfigError naming `where`
 */
function parseServerUrl(text: string, where: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new KubeConfigError(`${where}: must be an https:// URL, got ${JSON.stringify(text)}`);
  }
  if (url.protocol !== 'https:') {
    throw new KubeConfigError(
      `${where}: must be an https:// URL (tokens are never sent in clear), got ${JSON.stringify(text)}`,
    );
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new KubeConfigError(`${where}: must not hold credentials, a query or a fragment`);
  }
  return url;
}

/**
 * The in-cluster connection, as a pod reaches its API server: `KUBERNETES_SERVICE_HOST` and
 * `KUBERNETES_SERVICE_PORT`, the pod's service account token and the cluster CA from `dir`
 * (`/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}`). The token is read again for every call.
 *
 * @throws KubeConfigError when the process is not in a pod or the files cannot be read
 */
export async function inClusterConnection(
  env: Readonly<Record<string, string | undefined>> = process.env,
  dir: string = IN_CLUSTER_SERVICE_ACCOUNT_DIR,
): Promise<KubeConnection> {
  const host = env['KUBERNETES_SERVICE_HOST'];
  const port = env['KUBERNETES_SERVICE_PORT'];
  if (!host || !port) {
    throw new KubeConfigError(
      'not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set): ' +
        'set kube_config_file',
    );
  }
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65_535) {
    throw new KubeConfigError(`KUBERNETES_SERVICE_PORT: must be a port number, got ${JSON.stringify(port)}`);
  }
  const server = parseServerUrl(`https://${isIP(host) === 6 ? `[${host}]` : host}:${port}`, 'KUBERNETES_SERVICE_HOST');
  const tokenPath = join(dir, 'token');
  const ca = (await readSmallFile(join(dir, 'ca.crt'), 'in-cluster CA')).toString('utf8');
  // Read once now, so a missing token stops the server at start rather than failing every attestation.
  await readTokenFile(tokenPath, 'in-cluster service account token');
  return {
    server,
    ca,
    insecureSkipTlsVerify: false,
    tlsServerName: undefined,
    clientCertificate: undefined,
    bearerToken: () => readTokenFile(tokenPath, 'in-cluster service account token'),
    source: 'in-cluster',
  };
}

/** A named item of a kubeconfig list (`clusters`, `users`, `contexts`). */
function findNamed(config: Json, list: string, name: string, field: string, where: string): Json {
  const items = config[list];
  if (items !== undefined && !Array.isArray(items)) throw new KubeConfigError(`${where}: ${list} must be a list`);
  const item = (items ?? []).find((each: unknown) => isObject(each) && each['name'] === name) as Json | undefined;
  if (item === undefined) throw new KubeConfigError(`${where}: no ${list.slice(0, -1)} named ${JSON.stringify(name)}`);
  const body = item[field];
  if (!isObject(body))
    throw new KubeConfigError(`${where}: ${list.slice(0, -1)} ${JSON.stringify(name)} has no ${field}`);
  return body;
}

/**
 * The connection a kubeconfig file describes, for its `current-context`: the cluster's `server`,
 * `certificate-authority` or `certificate-authority-data` (or `insecure-skip-tls-verify`), `tls-server-name`, and the
 * user's `token`, `tokenFile`, or `client-certificate(-data)` with `client-key(-data)`. Relative paths are relative
 * to the kubeconfig's folder (as kubectl reads them). `exec`, `auth-provider` and basic auth are not supported.
 *
 * @throws KubeConfigError naming the file and the field that is missing or wrong
 */
export async function loadKubeConfigFile(path: string): Promise<KubeConnection> {
  const file = isAbsolute(path) ? path : resolve(path);
  const text = (await readSmallFile(file, 'kubeconfig')).toString('utf8');
  let config: unknown;
  try {
    config = load(text, { filename: file });
  } catch (error) {
    throw new KubeConfigError(`kubeconfig ${file}: not YAML: ${(error as Error).message.split('\n')[0]}`);
  }
  if (!isObject(config)) throw new KubeConfigError(`kubeconfig ${file}: must be a YAML mapping`);
  const contextName = config['current-context'];
  if (typeof contextName !== 'string' || contextName === '') {
    throw new KubeConfigError(`kubeconfig ${file}: current-context is not set`);
  }
  const where = `kubeconfig ${file}`;
  const context = findNamed(config, 'contexts', contextName, 'context', where);
  const clusterName = context['cluster'];
  const userName = context['user'];
  if (typeof clusterName !== 'string' || clusterName === '') {
    throw new KubeConfigError(`${where}: context ${JSON.stringify(contextName)} names no cluster`);
  }
  const cluster = findNamed(config, 'clusters', clusterName, 'cluster', where);
  const user =
    typeof userName === 'string' && userName !== '' ? findNamed(config, 'users', userName, 'user', where) : {};
  const base = dirname(file);
  const relative = (value: string): string => (isAbsolute(value) ? value : join(base, value));
  const clusterWhere = `${where}: cluster ${JSON.stringify(clusterName)}`;
  const userWhere = `${where}: user ${JSON.stringify(userName)}`;

  if (typeof cluster['server'] !== 'string') throw new KubeConfigError(`${clusterWhere}: server is not set`);
  const server = parseServerUrl(cluster['server'], `${clusterWhere}: server`);
  const insecure = cluster['insecure-skip-tls-verify'] === true;
  const caFile = stringField(cluster, 'certificate-authority', clusterWhere);
  const caData = stringField(cluster, 'certificate-authority-data', clusterWhere);
  if (insecure && (caFile !== undefined || caData !== undefined)) {
    // kubectl refuses the same combination: a CA that is never checked is a mistake waiting to be relied on.
    throw new KubeConfigError(`${clusterWhere}: insecure-skip-tls-verify and a certificate-authority are exclusive`);
  }
  let ca: string | undefined;
  if (caData !== undefined) ca = decodeData(caData, `${clusterWhere}: certificate-authority-data`);
  else if (caFile !== undefined) {
    ca = (await readSmallFile(relative(caFile), `${clusterWhere}: certificate-authority`)).toString('utf8');
  }
  if (ca !== undefined && !ca.includes('-----BEGIN CERTIFICATE-----')) {
    throw new KubeConfigError(`${clusterWhere}: certificate-authority holds no PEM CERTIFICATE`);
  }

  // Settings that change who the calls act as, or where they go, cannot be ignored quietly.
  if (cluster['proxy-url'] !== undefined) {
    throw new KubeConfigError(`${clusterWhere}: proxy-url is not supported; the server connects to the API directly`);
  }
  for (const unsupported of [
    'exec',
    'auth-provider',
    'username',
    'password',
    'as',
    'as-uid',
    'as-groups',
    'as-user-extra',
  ]) {
    if (user[unsupported] !== undefined) {
      throw new KubeConfigError(
        `${userWhere}: ${unsupported} is not supported; use token, tokenFile or client-certificate and client-key`,
      );
    }
  }
  const token = stringField(user, 'token', userWhere);
  const tokenFile = stringField(user, 'tokenFile', userWhere);
  const certificate = await pemField(user, 'client-certificate', relative, userWhere);
  const key = await pemField(user, 'client-key', relative, userWhere);
  if ((certificate === undefined) !== (key === undefined)) {
    throw new KubeConfigError(`${userWhere}: client-certificate and client-key go together`);
  }
  let bearerToken: (() => Promise<string>) | undefined;
  if (token !== undefined) {
    if (!/^[\x21-\x7e]+$/.test(token)) throw new KubeConfigError(`${userWhere}: token is not a bearer token`);
    bearerToken = async () => token;
  } else if (tokenFile !== undefined) {
    const tokenPath = relative(tokenFile);
    await readTokenFile(tokenPath, `${userWhere}: tokenFile`);
    bearerToken = () => readTokenFile(tokenPath, `${userWhere}: tokenFile`);
  }
  if (bearerToken === undefined && certificate === undefined) {
    throw new KubeConfigError(
      `${userWhere}: has no credentials (token, tokenFile or client-certificate and client-key)`,
    );
  }
  const tlsServerName = stringField(cluster, 'tls-server-name', clusterWhere);
  return {
    server,
    ca,
    insecureSkipTlsVerify: insecure,
    tlsServerName,
    clientCertificate: certificate !== undefined && key !== undefined ? { certificate, key } : undefined,
    bearerToken,
    source: `kubeconfig ${file} context ${contextName}`,
  };
}

function stringField(object: Json, field: string, where: string): string | undefined {
  const value = object[field];
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') throw new KubeConfigError(`${where}: ${field} must be a string`);
  return value;
}

function decodeData(value: string, where: string): string {
  if (!/^[A-Za-z0-9+/=\s]+$/.test(value)) throw new KubeConfigError(`${where}: must be base64`);
  return Buffer.from(value, 'base64').toString('utf8');
}

/** `<field>-data` (base64 PEM) or `<field>` (a PEM file). */
async function pemField(
  object: Json,
  field: string,
  relative: (path: string) => string,
  where: string,
): Promise<string | undefined> {
  const data = stringField(object, `${field}-data`, where);
  const file = stringField(object, field, where);
  const pem =
    data !== undefined
      ? decodeData(data, `${where}: ${field}-data`)
      : file !== undefined
        ? (await readSmallFile(relative(file), `${where}: ${field}`)).toString('utf8')
        : undefined;
  if (pem !== undefined && !pem.includes('-----BEGIN '))
    throw new KubeConfigError(`${where}: ${field} holds no PEM block`);
  return pem;
}
