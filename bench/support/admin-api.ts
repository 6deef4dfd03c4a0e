/** The server's admin HTTP API over its local admin Unix socket (trusted by file permissions, no token). */
import { Agent, request } from 'node:http';

/** A registration entry to create: the workload's SPIFFE ID, its parent (agent or node alias) and selectors. */
export interface EntrySpec {
  readonly spiffeId: string;
  readonly parentId: string;
  /** `type:value`, e.g. `unix:uid:1000`. */
  readonly selectors: readonly string[];
}

export interface CreatedEntry {
  readonly id: string;
  readonly spiffeId: string;
}

/** Largest batch `POST /v1/entries` takes. */
const ENTRY_BATCH = 500;
const REQUEST_TIMEOUT_MS = 120_000;

interface HttpResult {
  readonly status: number;
  readonly contentType: string;
  readonly text: string;
}

interface BatchResult {
  readonly status: { readonly code: string; readonly message: string };
  readonly entry?: { readonly id: string; readonly spiffe_id: string };
}

export class AdminApi {
  // One kept-alive connection, as an operator's tool would hold: each call then measures the API, not a connect.
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 1 });

  constructor(readonly socketPath: string) {}

  /**
   * Calls the admin API with a JSON body; resolves with the parsed JSON answer (or the text when it is not JSON).
   *
   * @throws Error with the method, path, status and the server's message when the answer is not 2xx.
   */
  async call(method: string, path: string, body?: unknown): Promise<unknown> {
    const result = await this.send(method, path, body);
    const parsed: unknown = result.contentType.includes('json') && result.text ? JSON.parse(result.text) : result.text;
    if (result.status < 200 || result.status >= 300) {
      const message = (parsed as { message?: unknown } | undefined)?.message;
      throw new Error(
        `admin api ${method} ${path}: ${result.status} ${typeof message === 'string' ? message : result.text}`,
      );
    }
    return parsed;
  }

  /** Creates entries in batches of 500; every one must be created. */
  async createEntries(entries: readonly EntrySpec[]): Promise<CreatedEntry[]> {
    const created: CreatedEntry[] = [];
    for (let start = 0; start < entries.length; start += ENTRY_BATCH) {
      const batch = entries.slice(start, start + ENTRY_BATCH);
      const body = {
        entries: batch.map((entry) => ({
          spiffe_id: entry.spiffeId,
          parent_id: entry.parentId,
          selectors: entry.selectors.map((selector) => {
            const colon = selector.indexOf(':');
            return { type: selector.slice(0, colon), value: selector.slice(colon + 1) };
          }),
        })),
      };
      const { results } = (await this.call('POST', '/v1/entries', body)) as { results: BatchResult[] };
      results.forEach((result, index) => {
        if (result.status.code !== 'ok' || !result.entry) {
          throw new Error(`entry ${batch[index]?.spiffeId} was not created: ${result.status.message}`);
        }
        created.push({ id: result.entry.id, spiffeId: result.entry.spiffe_id });
      });
    }
    return created;
  }

  /** A single-use join token; `aliasId` makes entries parented by it reach the agent that attests with it. */
  async joinToken(aliasId?: string): Promise<string> {
    const body = aliasId === undefined ? {} : { spiffe_id: aliasId };
    const { token } = (await this.call('POST', '/v1/join-tokens', body)) as { token: string };
    return token;
  }

  /** The server's CA certificates, PEM (what `sigil-server bundle show` prints). */
  async bundlePem(): Promise<string> {
    return String(await this.call('GET', '/v1/bundle?format=pem'));
  }

  close(): void {
    this.agent.destroy();
  }

  private send(method: string, path: string, body?: unknown): Promise<HttpResult> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          agent: this.agent,
          method,
          path,
          timeout: REQUEST_TIMEOUT_MS,
          headers: payload === undefined ? {} : { 'content-type': 'application/json' },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', reject);
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              contentType: String(res.headers['content-type'] ?? ''),
              text: Buffer.concat(chunks).toString('utf8'),
            }),
          );
        },
      );
      req.on('timeout', () =>
        req.destroy(new Error(`admin api ${method} ${path}: no answer within ${REQUEST_TIMEOUT_MS / 1000} s`)),
      );
      req.on('error', reject);
      req.end(payload);
    });
  }
}
