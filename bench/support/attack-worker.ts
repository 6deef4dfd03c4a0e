/**
 * Runs a benchmark's attacker in a worker thread: its own event loop (and, on an idle machine, its own core), so
 * that the attacker's client work (TLS, JSON) does not delay the legitimate caller measured on the main thread.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

/** In the main thread: runs the script at `scriptUrl` as a worker with `plan`, resolves with what it posts back. */
export function runAttackWorker<Plan, Result>(scriptUrl: string, plan: Plan): Promise<Result> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(scriptUrl), { workerData: plan });
    worker.once('message', (result: Result) => resolve(result));
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the attack worker exited with code ${code} before answering`)));
  });
}

/** True in the attack worker: the script should then run {@link serveAttack} instead of its main. */
export const isAttackWorker = !isMainThread;

/** In the worker: runs `attack` on the plan the main thread passed and posts its result back. */
export async function serveAttack<Plan, Result>(attack: (plan: Plan) => Promise<Result>): Promise<void> {
  parentPort!.postMessage(await attack(workerData as Plan));
}
