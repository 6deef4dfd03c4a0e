/**
 * The length rule of a Unix socket path: `sun_path` holds 108 bytes including the terminating NUL, so the path
 * itself may take 107. Longer paths fail at bind or connect with an error that names neither the rule nor the path.
 */
export const MAX_SOCKET_PATH_BYTES = 107;

/** Whether `value` can name a Unix socket: a non-empty string of at most 107 bytes without a NUL. */
export function isSocketPath(value: unknown): value is string {
  return (
    typeof value === 'string' &&
    value.length > 0 &&
    !value.includes('\0') &&
    Buffer.byteLength(value) <= MAX_SOCKET_PATH_BYTES
  );
}

/** What a config error says about a bad socket path. */
export const SOCKET_PATH_RULE = `must be a Unix socket path of at most ${MAX_SOCKET_PATH_BYTES} bytes`;
