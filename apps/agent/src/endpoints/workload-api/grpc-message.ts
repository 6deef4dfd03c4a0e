import { type OutgoingHttpHeaders } from 'node:http';
import { type Http2ServerResponse } from 'node:http2';

const GRPC_MESSAGE = 'grpc-message';

/**
 * Percent-encodes a status message as the gRPC HTTP/2 protocol specifies (`Percent-Byte-Unencoded` is space and
 * visible ASCII except `%`): every other UTF-8 byte becomes `%XX`.
 */
export function encodeGrpcMessage(message: string): string {
  let encoded = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    encoded +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return encoded;
}

function respec(headers: OutgoingHttpHeaders | undefined): void {
  const value = headers?.[GRPC_MESSAGE];
  if (headers === undefined || typeof value !== 'string') return;
  let message: string;
  try {
    message = decodeURIComponent(value);
  } catch {
    return;
  }
  headers[GRPC_MESSAGE] = encodeGrpcMessage(message);
}

/**
 * connect-node encodes `grpc-message` with `encodeURIComponent`, which also escapes `:` and `/`. Clients that decode
 * with `decodeURI`, such as @grpc/grpc-js, then show `spiffe_id%3A …`. This re-encodes the message of one response,
 * in its headers (trailers-only responses) and trailers, exactly as the gRPC spec asks, which every client decodes.
 */
export function useSpecGrpcMessageEncoding(response: Http2ServerResponse): void {
  const writeHead = response.writeHead.bind(response) as (status: number, headers?: OutgoingHttpHeaders) => unknown;
  const addTrailers = response.addTrailers.bind(response);
  Object.assign(response, {
    writeHead: (status: number, headers?: OutgoingHttpHeaders) => {
      respec(headers);
      return writeHead(status, headers);
    },
    addTrailers: (trailers: OutgoingHttpHeaders) => {
      respec(trailers);
      addTrailers(trailers);
    },
  });
}
