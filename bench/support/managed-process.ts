/** A child process a benchmark started: its output kept in a log file and a short tail, stopped on cleanup. */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';

/** How much of a child's latest output is kept in memory, for waiting on a line and for error messages. */
const TAIL_CHARS = 64 * 1024;

export interface SpawnOptions {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  /** File the child's stdout and stderr are appended to. */
  readonly logPath: string;
}

export class ManagedProcess {
  private tail = '';
  private readonly lineWaiters = new Set<(line: string) => boolean>();
  private partialLine = '';
  readonly exited: Promise<number | null>;

  private constructor(
    readonly name: string,
    readonly logPath: string,
    private readonly child: ChildProcess,
    log: WriteStream,
  ) {
    const onData = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      log.write(text);
      this.tail = (this.tail + text).slice(-TAIL_CHARS);
      const lines = (this.partialLine + text).split('\n');
      this.partialLine = lines.pop() ?? '';
      for (const line of lines)
        for (const waiter of this.lineWaiters) if (waiter(line)) this.lineWaiters.delete(waiter);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        log.end();
        resolve(code ?? (signal === null ? null : -1));
      });
      child.once('error', (error) => {
        this.tail += `\nspawn failed: ${error.message}`;
        log.end();
        resolve(-1);
      });
    });
  }

  static spawn(options: SpawnOptions): ManagedProcess {
    const log = createWriteStream(options.logPath, { flags: 'a' });
    const child = spawn(options.command, [...options.args], {
      cwd: options.cwd,
      env: options.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new ManagedProcess(options.name, options.logPath, child, log);
  }

  /** The process id (with `taskset -c` in front, taskset execs the program, so this is the program's pid). */
  get pid(): number {
    if (this.child.pid === undefined)
      throw new Error(`${this.name}: the process did not start: ${this.recentOutput()}`);
    return this.child.pid;
  }

  get isRunning(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last lines the process wrote, for error messages. */
  recentOutput(lines = 20): string {
    return this.tail.split('\n').slice(-lines).join('\n');
  }

  /**
   * Resolves with the first line written from now on that matches `pattern`; rejects when the process exits first
   * or after `timeoutMs`.
   */
  waitForLine(pattern: RegExp, timeoutMs: number, what: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const waiter = (line: string): boolean => {
        if (!pattern.test(line)) return false;
        settle();
        resolve(line);
        return true;
      };
      const timer = setTimeout(() => {
        settle();
        reject(
          new Error(
            `${this.name}: ${what} not seen within ${timeoutMs / 1000} s; last output:\n${this.recentOutput()}`,
          ),
        );
      }, timeoutMs);
      const onExit = (code: number | null): void => {
        if (!this.lineWaiters.has(waiter)) return;
        settle();
        reject(new Error(`${this.name}: exited (${code}) before ${what}; last output:\n${this.recentOutput()}`));
      };
      const settle = (): void => {
        clearTimeout(timer);
        this.lineWaiters.delete(waiter);
      };
      this.lineWaiters.add(waiter);
      void this.exited.then(onExit);
    });
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  async stop(graceMs = 15_000): Promise<void> {
    if (!this.isRunning) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** For the `exit` handler: no waiting possible there. */
  killNow(): void {
    if (this.isRunning) this.child.kill('SIGKILL');
  }
}
