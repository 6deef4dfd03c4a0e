import { request } from 'node:http';

/** A JSON answer: its status and parsed body. */
export interface JsonAnswer {
  readonly status: number;
  readonly body: { error?: string; message?: string } & Record<string, unknown>;
}

/** How long a request waits for its whole answer: a hung server fails the request, named, not the test by its timeout. */
export const UNIX_REQUEST_TIMEOUT_MS = 120_000;

/** Sends one HTTP request over a Unix socket (an admin socket) with a raw body, and parses the JSON answer. */
export function unixJsonRequest(
  socketPath: string,
  method: string,
  path: string,
  body?: string,
  contentType = 'application/json',
  timeoutMs = UNIX_REQUEST_TIMEOUT_MS,
): Promise<JsonAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath, method, path, headers: body === undefined ? {} : { 'content-type': contentType } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString('utf8');
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) });
          } catch {
            reject(
              new Error(`${method} ${path}: ${res.statusCode} with a body that is not JSON: ${text.slice(0, 200)}`),
            );
          }
        });
      },
    );
    const timer = setTimeout(
      () => req.destroy(new Error(`${method} ${path}: no whole answer on ${socketPath} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    req.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    req.end(body);
  });
}
