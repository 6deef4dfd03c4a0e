/**
 * Runs a benchmark's attacker in a child process of its own, as an attacker on another host would be: its own event
 * loop, heap, libuv thread pool and OpenSSL state, and one core ({@link ATTACKER_CPU}, `taskset`), so that its client
 * work (thousands of TLS handshakes, JSON) does not take the server's CPU. Unpinned, in a worker thread of the
 * benchmark, it took a core and more: the server's event loop, runnable, waited for a core for up to 570 ms at a
 * time (its CPU profile showed those waits as idle), and that was the slowest legitimate answer.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The core a benchmark's attacker runs on; the server under test may use every core. */
export const ATTACKER_CPU = '1';

/** Set in the attacker's environment: the script then runs {@link serveAttack} instead of its main. */
const ATTACKER_ENV = 'SIGIL_BENCH_ATTACKER';

/**
 * In the benchmark: starts the script at `scriptUrl` as the attacker (`taskset -c` {@link ATTACKER_CPU}, with an IPC
 * channel using the advanced serialization), for a benchmark that talks to it in more than one message.
 */
export function forkAttackWorker(scriptUrl: string): ChildProcess {
  return fork(fileURLToPath(scriptUrl), [], {
    // `taskset -c N node …`: the whole process, every thread of it, on that core.
    execPath: 'taskset',
    execArgv: ['-c', ATTACKER_CPU, process.execPath, ...process.execArgv],
    env: { ...process.env, [ATTACKER_ENV]: '1' },
    serialization: 'advanced',
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

/** In the benchmark: runs the script at `scriptUrl` as the attacker with `plan`, resolves with what it sends back. */
export function runAttackWorker<Plan, Result>(scriptUrl: string, plan: Plan): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = forkAttackWorker(scriptUrl);
    let answered = false;
    child.once('message', (result) => {
      answered = true;
      resolve(result as Result);
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (!answered) reject(new Error(`the attacker exited (${signal ?? `code ${code}`}) before answering`));
    });
    child.send(plan as object);
  });
}

/** True in the attacker's process: the script should then run {@link serveAttack} instead of its main. */
export const isAttackWorker = process.env[ATTACKER_ENV] === '1';

/** In the attacker: runs `attack` on the plan the benchmark sent and sends its result back, then exits. */
export async function serveAttack<Plan, Result>(attack: (plan: Plan) => Promise<Result>): Promise<void> {
  const plan = await new Promise<Plan>((resolve) => process.once('message', (message) => resolve(message as Plan)));
  const result = await attack(plan);
  await new Promise<void>((resolve, reject) =>
    process.send!(result, (error: Error | null) => (error ? reject(error) : resolve())),
  );
  process.disconnect();
}
