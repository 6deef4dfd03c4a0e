import { request } from 'node:http';

/** A JSON answer: its status and parsed body. */
export interface JsonAnswer {
  readonly status: number;
  readonly body: { error?: string; message?: string } & Record<string, unknown>;
}

/** Sends one HTTP request over a Unix socket (an admin socket) with a raw body, and parses the JSON answer. */
export function unixJsonRequest(
  socketPath: string,
  method: string,
  path: string,
  body?: string,
  contentType = 'application/json',
): Promise<JsonAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath, method, path, headers: body === undefined ? {} : { 'content-type': contentType } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
