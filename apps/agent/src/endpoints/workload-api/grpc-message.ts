/**
 * Percent-encodes a status message as the gRPC HTTP/2 protocol specifies (`Percent-Byte-Unencoded` is space and
 * visible ASCII except `%`): every other UTF-8 byte becomes `%XX`. Not `encodeURIComponent` (connect-node's choice
 * when it served the agent's socket), which also escapes `:` and `/`: clients that decode with `decodeURI`, such as
 * @grpc/grpc-js, then showed `spiffe_id%3A …`.
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
