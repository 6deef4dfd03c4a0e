/**
 * A signing worker thread of {@link CsrSigningPool}: holds the CA key it was last given (a KeyObject handed over by
 * `postMessage` inside the process, never encoded or written anywhere) with the profile of its certificate, read by
 * the pool (this thread loads no @peculiar/x509), and signs the CSR chunks sent to it with
 * {@link signCsrs}, the same per-CSR work as on the server's event loop. It answers each chunk with the leaves or a
 * message per CSR; the key is never part of any answer or error.
 */
import { parentPort } from 'node:worker_threads';
import { signCsrs, SpiffeIdCache } from './csr-signing.js';
import { TrustDomain } from '@sigil/spiffe';
import { SvidLeafSigner } from './svid-leaf-signer.js';
import type { FromSigningWorker, ToSigningWorker } from './signing-pool.js';

const port = parentPort;
if (port === null) throw new Error('signing-worker: must run as a worker thread (node:worker_threads)');

/** The CA this worker signs with: only the latest key it was given (the pool resends a key whenever a chunk names another). */
let current: { keyId: string; signer: SvidLeafSigner } | { keyId: string; problem: string } | undefined;
const ids = new SpiffeIdCache();

function answer(message: FromSigningWorker): void {
  port!.postMessage(message);
}

port.on('message', (message: ToSigningWorker) => {
  if (message.type === 'key') {
    try {
      current = {
        keyId: message.keyId,
        signer: SvidLeafSigner.fromCaProfile(
          {
            ...message.profile,
            trustDomain:
              message.profile.trustDomain === undefined ? undefined : TrustDomain.parse(message.profile.trustDomain),
          },
          message.privateKey,
        ),
      };
    } catch (error) {
      current = { keyId: message.keyId, problem: error instanceof Error ? error.message : 'not a signing key' };
    }
    return;
  }
  const { job, keyId } = message;
  if (current?.keyId !== keyId || !('signer' in current)) {
    const why = current?.keyId === keyId && 'problem' in current ? `: ${current.problem}` : ' (never given)';
    answer({ job, error: `signing worker: no usable key ${keyId}${why}` });
    return;
  }
  // Answers are copied, not transferred. Each leaf is first copied into a buffer of its own size: a leaf may be a view
  // of Node's shared Buffer pool, and posting the view would copy its whole 8 KiB slab (other requests' bytes) across.
  signCsrs(current.signer, new Date(message.now), message.items, ids).then(
    (outcomes) =>
      answer({
        job,
        outcomes: outcomes.map((outcome) =>
          outcome.ok ? { ...outcome, leafDer: new Uint8Array(outcome.leafDer) } : outcome,
        ),
      }),
    (error: unknown) =>
      answer({ job, error: `signing worker: ${error instanceof Error ? error.message : String(error)}` }),
  );
});
