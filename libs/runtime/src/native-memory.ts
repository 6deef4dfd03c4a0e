import { createRequire } from 'node:module';

// koffi (a native addon) is loaded on first use, in the try below: a server whose platform has no koffi binary still
// starts, without the trim (review R17 LOW).
const requireModule = createRequire(import.meta.url);

interface MallocTrim {
  (pad: number): number;
  /** The same call on a worker thread (koffi's asynchronous call), its result given to `done`. */
  async(pad: number, done: (error: unknown, released: number) => void): void;
}

let mallocTrim: MallocTrim | null | undefined;

function native(): MallocTrim | null {
  if (mallocTrim !== undefined) return mallocTrim;
  mallocTrim = null;
  if (process.platform !== 'linux') return mallocTrim;
  try {
    // glibc's, from the process's own symbol table; musl and other C libraries have none (koffi throws).
    const koffi = requireModule('koffi') as typeof import('koffi');
    mallocTrim = koffi.load(null).func('int malloc_trim(size_t pad)') as MallocTrim;
  } catch {
    mallocTrim = null;
  }
  return mallocTrim;
}

/** Whether {@link releaseFreedNativeMemory} can do anything here (glibc's `malloc_trim` is present). */
export function canReleaseFreedNativeMemory(): boolean {
  return native() !== null;
}

/**
 * Gives the system back the pages glibc's allocator holds free, in every arena (`malloc_trim(0)`). Memory that V8
 * and its compiler threads allocate and free again (TLS, zlib; the embedded database's PostgreSQL when its
 * WebAssembly still tiered up) stays resident in the allocator's per-thread arenas otherwise: ~40–60 MiB of
 * sigil-server's RSS after a start on the embedded database then (bench/README.md, issue 13). Nothing live is touched;
 * the next allocations fault fresh pages in. Returns whether memory was released; false, doing nothing, where the C library is not glibc.
 */
export function releaseFreedNativeMemory(): boolean {
  const trim = native();
  return trim !== null && trim(0) === 1;
}

/** A first stretch of more frequent releases, from the start of {@link releaseFreedNativeMemoryEvery}. */
export interface NativeMemoryWarmUp {
  /** Interval during the warm-up. */
  readonly intervalMs: number;
  /** How long the warm-up lasts; then the interval is the ordinary one. */
  readonly forMs: number;
}

/**
 * Does what {@link releaseFreedNativeMemory} does now and then every `intervalMs`, on a worker thread (a call that
 * releases tens of MiB takes ~20 ms, which the event loop does not wait for; one call at a time), from unref'd timers
 * that keep no process alive. With `warmUp`, every `warmUp.intervalMs` for the first `warmUp.forMs` instead: after a
 * start, while the memory the compiler threads free again comes fastest. Returns the function that stops it; a no-op
 * where the C library is not glibc.
 */
export function releaseFreedNativeMemoryEvery(intervalMs: number, warmUp?: NativeMemoryWarmUp): () => void {
  const trim = native();
  if (trim === null) return () => undefined;
  let running = false;
  const release = (): void => {
    if (running) return;
    running = true;
    trim.async(0, () => {
      running = false;
    });
  };
  release();
  let timer = setInterval(release, warmUp?.intervalMs ?? intervalMs);
  timer.unref();
  const endWarmUp =
    warmUp &&
    setTimeout(() => {
      clearInterval(timer);
      timer = setInterval(release, intervalMs);
      timer.unref();
    }, warmUp.forMs);
  endWarmUp?.unref();
  return () => {
    clearTimeout(endWarmUp);
    clearInterval(timer);
  };
}
