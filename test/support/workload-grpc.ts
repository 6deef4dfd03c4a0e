/**
 * Test helper: a plain @grpc/grpc-js client of the SPIFFE Workload API, loaded from libs/workload-api/proto with
 * @grpc/proto-loader (no code of ours on the client side), and the checks every test applies to what it receives.
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { TrustBundle, TrustDomain, parseX509Svid, verifyX509Svid, type VerifiedX509Svid } from '@sigil/spiffe';
import { ROOT } from './sigil-processes.js';

export const WORKLOAD_PROTO = join(ROOT, 'libs/workload-api/proto/workload.proto');

export interface X509SvidMessage {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
  hint: string;
}

export interface X509SvidResponse {
  svids: X509SvidMessage[];
  federated_bundles: Record<string, Buffer>;
}

type Callback<T> = (error: grpc.ServiceError | null, response: T) => void;

export interface WorkloadClient extends grpc.Client {
  FetchX509SVID(request: object, metadata: grpc.Metadata): grpc.ClientReadableStream<X509SvidResponse>;
  FetchX509Bundles(
    request: object,
    metadata: grpc.Metadata,
  ): grpc.ClientReadableStream<{ bundles: Record<string, Buffer> }>;
  FetchJWTBundles(
    request: object,
    metadata: grpc.Metadata,
  ): grpc.ClientReadableStream<{ bundles: Record<string, Buffer> }>;
  FetchJWTSVID(
    request: { audience: string[]; spiffe_id?: string },
    metadata: grpc.Metadata,
    callback: Callback<{ svids: { spiffe_id: string; svid: string; hint: string }[] }>,
  ): grpc.ClientUnaryCall;
  ValidateJWTSVID(
    request: { audience: string; svid: string },
    metadata: grpc.Metadata,
    callback: Callback<{ spiffe_id: string; claims: unknown }>,
  ): grpc.ClientUnaryCall;
}

let service: grpc.ServiceClientConstructor | undefined;

/** A client of the Workload API on the Unix socket at `socketPath`. */
export function workloadClient(socketPath: string): WorkloadClient {
  service ??= grpc.loadPackageDefinition(protoLoader.loadSync(WORKLOAD_PROTO, { keepCase: true }))[
    'SpiffeWorkloadAPI'
  ] as grpc.ServiceClientConstructor;
  return new service(`unix://${socketPath}`, grpc.credentials.createInsecure()) as unknown as WorkloadClient;
}

/** The `workload.spiffe.io: true` metadata every call needs (or none, to test its absence). */
export function securityHeader(present = true): grpc.Metadata {
  const metadata = new grpc.Metadata();
  if (present) metadata.set('workload.spiffe.io', 'true');
  return metadata;
}

/** The first message of a stream, then cancels it; rejects with the call's error. */
export function firstMessage<T>(stream: grpc.ClientReadableStream<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    stream.once('data', (message: T) => {
      resolve(message);
      stream.cancel();
    });
    stream.once('error', reject);
  });
}

/** Collects a stream's messages and lets a test wait for one that satisfies a condition. */
export class StreamWatcher<T> {
  readonly messages: T[] = [];
  error: grpc.ServiceError | undefined;

  constructor(readonly stream: grpc.ClientReadableStream<T>) {
    stream.on('data', (message: T) => this.messages.push(message));
    stream.on('error', (error: grpc.ServiceError) => (this.error = error));
  }

  /** Resolves with the first message at index ≥ `from` that satisfies `predicate`. */
  async next(predicate: (message: T) => boolean, options: { from?: number; timeoutMs?: number } = {}): Promise<T> {
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    for (;;) {
      const found = this.messages.slice(options.from ?? 0).find(predicate);
      if (found !== undefined) return found;
      if (this.error !== undefined && this.error.code !== grpc.status.CANCELLED) throw this.error;
      if (Date.now() > deadline) throw new Error(`no matching message among ${this.messages.length} received`);
      await new Promise((done) => setTimeout(done, 20));
    }
  }

  close(): void {
    this.stream.cancel();
  }
}

/** Promisified unary call. */
export function unary<Request, Response>(
  call: (request: Request, metadata: grpc.Metadata, callback: Callback<Response>) => unknown,
  request: Request,
  metadata = securityHeader(),
): Promise<Response> {
  return new Promise((resolve, reject) =>
    call(request, metadata, (error, response) => (error ? reject(error) : resolve(response))),
  );
}

/**
 * Checks one X509SVID message as a relying party would: the key matches the leaf, and the chain verifies with
 * libs/spiffe against the bundle sent with it, at `now` (default: the current time). Returns the verified SVID.
 */
export async function verifySvidMessage(svid: X509SvidMessage, now?: Date): Promise<VerifiedX509Svid> {
  const chain = new Uint8Array(svid.x509_svid);
  const parsed = await parseX509Svid(chain, new Uint8Array(svid.x509_svid_key));
  const bundle = TrustBundle.fromX509Der(TrustDomain.parse(svid.spiffe_id), new Uint8Array(svid.bundle));
  const verified = await verifyX509Svid(chain, bundle, { now });
  if (!verified.spiffeId.equals(parsed.spiffeId) || verified.spiffeId.toString() !== svid.spiffe_id) {
    throw new Error(`spiffe_id ${svid.spiffe_id} does not match the certificate ${verified.spiffeId.toString()}`);
  }
  return verified;
}

/** The SPIFFE IDs of a response. */
export function idsOf(response: X509SvidResponse): string[] {
  return response.svids.map((svid) => svid.spiffe_id).sort();
}

/** Splits concatenated DER certificates (the `x509_svid` and `bundle` fields) into one buffer per certificate. */
export function splitChain(der: Uint8Array): Uint8Array[] {
  const certificates: Uint8Array[] = [];
  for (let offset = 0; offset < der.length;) {
    if (der[offset] !== 0x30) throw new Error(`splitChain: no DER SEQUENCE at offset ${offset}`);
    const first = der[offset + 1]!;
    const lengthBytes = first & 0x80 ? first & 0x7f : 0;
    let length = lengthBytes === 0 ? first : 0;
    for (let i = 0; i < lengthBytes; i++) length = length * 256 + der[offset + 2 + i]!;
    const end = offset + 2 + lengthBytes + length;
    certificates.push(der.slice(offset, end));
    offset = end;
  }
  return certificates;
}
