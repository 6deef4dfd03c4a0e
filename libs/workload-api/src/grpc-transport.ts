import { type Transport } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { type Authorizer } from './authorizer.js';
import { WorkloadApiError } from './errors.js';
import { type SpiffeTlsConfig, type X509TlsSource, createClientTlsOptions } from './tls.js';

/** Options of {@link createMtlsGrpcTransport}. */
export interface MtlsGrpcTransportOptions extends SpiffeTlsConfig {
  /** The server's base URL, `https://host:port`. */
  readonly baseUrl: string;
}

/**
 * A Connect transport (`@connectrpc/connect`, gRPC protocol over HTTP/2) with mutual SPIFFE authentication: each new
 * HTTP/2 connection presents the source's current SVID and accepts the server only if its X.509-SVID verifies
 * against the bundle of its trust domain and `authorizer` agrees ({@link createClientTlsOptions}). Use it with
 * `createClient(Service, transport)`.
 *
 * @throws WorkloadApiError `ERR_ARGUMENT_INVALID` when `baseUrl` is not an `https:` URL or the authorizer is missing.
 */
export function createMtlsGrpcTransport(
  source: X509TlsSource,
  authorizer: Authorizer,
  options: MtlsGrpcTransportOptions,
): Transport {
  let url: URL;
  try {
    url = new URL(options.baseUrl);
  } catch {
    throw new WorkloadApiError('ERR_ARGUMENT_INVALID', `baseUrl is not a url: ${String(options.baseUrl)}`);
  }
  if (url.protocol !== 'https:') {
    throw new WorkloadApiError('ERR_ARGUMENT_INVALID', `baseUrl must be an https: url, got ${url.protocol}`);
  }
  const { baseUrl, ...tls } = options;
  return createGrpcTransport({ baseUrl, nodeOptions: createClientTlsOptions(source, authorizer, tls) });
}
