/**
 * Plain @grpc/grpc-js clients of the SPIFFE Workload API, built from the standard's proto
 * (`libs/workload-api/proto/workload.proto`), as a third-party workload would call the agent.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ROOT } from './harness.js';

/** The decoded fields of one `X509SVID` the benchmarks look at. */
export interface X509SvidMessage {
  readonly spiffe_id: string;
  readonly x509_svid: Buffer;
}

export interface X509SvidResponseMessage {
  readonly svids: readonly X509SvidMessage[];
}

type WorkloadClient = grpc.Client & {
  FetchX509SVID(request: object, metadata: grpc.Metadata): grpc.ClientReadableStream<X509SvidResponseMessage>;
  FetchJWTSVID(
    request: { audience: readonly string[] },
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, response?: { svids: { spiffe_id: string; svid: string }[] }) => void,
  ): grpc.ClientUnaryCall;
};

let clientConstructor: grpc.ServiceClientConstructor | undefined;

function workloadApiClient(): grpc.ServiceClientConstructor {
  if (!clientConstructor) {
    const definition = protoLoader.loadSync(join(ROOT, 'libs/workload-api/proto/workload.proto'), {
      keepCase: true,
      defaults: true,
    });
    clientConstructor = grpc.loadPackageDefinition(definition)['SpiffeWorkloadAPI'] as grpc.ServiceClientConstructor;
  }
  return clientConstructor;
}

/** The security header every Workload API call must carry. */
function securityHeader(): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set('workload.spiffe.io', 'true');
  return metadata;
}

/**
 * A client on `unix://<socketPath>`. With `ownConnection`, it opens its own connection instead of sharing the
 * process-wide one (grpc-js pools connections by target), as separate workload processes would.
 */
export function newWorkloadClient(socketPath: string, options: { ownConnection?: boolean } = {}): WorkloadClient {
  const Client = workloadApiClient();
  return new Client(`unix://${socketPath}`, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    ...(options.ownConnection && { 'grpc.use_local_subchannel_pool': 1 }),
  }) as unknown as WorkloadClient;
}

/** One received `X509SVIDResponse` and when it arrived (`performance.now()`). */
export interface ReceivedX509 {
  readonly at: number;
  readonly spiffeIds: ReadonlySet<string>;
}

/**
 * An open `FetchX509SVID` stream that remembers when each message arrived and lets a caller wait for the first
 * message (from now on, or already received when `includeLatest`) that satisfies a condition.
 */
export class X509SvidStream {
  private readonly call: grpc.ClientReadableStream<X509SvidResponseMessage>;
  private latest: ReceivedX509 | undefined;
  /** Messages received so far (each one the full SVID set). */
  messages = 0;
  private failure: Error | undefined;
  private readonly waiters = new Set<{
    test: (message: ReceivedX509) => boolean;
    resolve: (message: ReceivedX509) => void;
    reject: (error: Error) => void;
  }>();

  constructor(client: WorkloadClient) {
    this.call = client.FetchX509SVID({}, securityHeader());
    this.call.on('data', (response: X509SvidResponseMessage) => {
      const message = { at: performance.now(), spiffeIds: new Set(response.svids.map((svid) => svid.spiffe_id)) };
      this.messages++;
      this.latest = message;
      for (const waiter of this.waiters) {
        if (waiter.test(message)) {
          this.waiters.delete(waiter);
          waiter.resolve(message);
        }
      }
    });
    const fail = (error: Error): void => {
      this.failure ??= error;
      for (const waiter of this.waiters) waiter.reject(this.failure);
      this.waiters.clear();
    };
    this.call.on('error', (error: grpc.ServiceError) => {
      if (error.code !== grpc.status.CANCELLED) fail(new Error(`FetchX509SVID stream failed: ${error.message}`));
    });
    this.call.on('end', () => fail(new Error('FetchX509SVID stream ended')));
  }

  /** Resolves with the first message satisfying `test`; rejects if the stream fails or after `timeoutMs`. */
  waitFor(test: (message: ReceivedX509) => boolean, timeoutMs: number, includeLatest = true): Promise<ReceivedX509> {
    if (includeLatest && this.latest && test(this.latest)) return Promise.resolve(this.latest);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`no FetchX509SVID message satisfied the condition within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      const waiter = {
        test,
        resolve: (message: ReceivedX509) => {
          clearTimeout(timer);
          resolve(message);
        },
        reject: (error: Error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.waiters.add(waiter);
    });
  }

  cancel(): void {
    this.call.cancel();
  }
}

/**
 * Opens a `FetchX509SVID` stream on a fresh client and resolves with the milliseconds from the call to its first
 * message, which must hold `expectedId`; the stream and the client are closed afterwards.
 */
export async function timeFirstX509Response(
  socketPath: string,
  expectedId: string,
  timeoutMs: number,
): Promise<number> {
  const client = newWorkloadClient(socketPath, { ownConnection: true });
  try {
    const started = performance.now();
    const stream = new X509SvidStream(client);
    try {
      const first = await stream.waitFor(() => true, timeoutMs);
      if (!first.spiffeIds.has(expectedId)) {
        throw new Error(`first FetchX509SVID message lacks ${expectedId}: ${[...first.spiffeIds].join(', ')}`);
      }
      return first.at - started;
    } finally {
      stream.cancel();
    }
  } finally {
    client.close();
  }
}

/** `FetchJWTSVID` for `audience`: resolves with the token of `expectedId`, rejects with the call's error. */
export function fetchJwtSvid(
  client: WorkloadClient,
  audience: readonly string[],
  expectedId: string,
  timeoutMs: number,
): Promise<string> {
  return new Promise((resolve, reject) => {
    client.FetchJWTSVID({ audience }, securityHeader(), { deadline: Date.now() + timeoutMs }, (error, response) => {
      if (error !== null) return reject(new Error(`FetchJWTSVID failed: ${error.message}`));
      const svid = response?.svids.find((each) => each.spiffe_id === expectedId);
      if (svid === undefined) return reject(new Error(`FetchJWTSVID answer lacks ${expectedId}`));
      resolve(svid.svid);
    });
  });
}
