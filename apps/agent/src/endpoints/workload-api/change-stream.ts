/** Something that tells its listeners "my state changed" (the identity cache). */
export interface ChangeSource {
  /** Calls `listener` after every change; returns the function that stops it. */
  subscribe(listener: () => void): () => void;
}

/**
 * Ticks once at once and then once after each change of `source`, until `signal` aborts, and then throws the abort
 * reason, so a stream ended by the server's shutdown carries its status (`UNAVAILABLE`) instead of a clean end that
 * clients would not retry. Changes that happen while the consumer is busy (for example while a slow client holds
 * back the stream) collapse into one tick: streams send the full state, so only the latest state matters (SPIFFE
 * Workload API §4.3).
 */
export async function* changes(source: ChangeSource, signal: AbortSignal): AsyncGenerator<void, void, undefined> {
  let changed = true;
  let wake: (() => void) | undefined;
  const onChange = (): void => {
    changed = true;
    wake?.();
  };
  const unsubscribe = source.subscribe(onChange);
  signal.addEventListener('abort', onChange);
  try {
    while (!signal.aborted) {
      if (changed) {
        changed = false;
        yield;
        continue;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = undefined;
    }
    throw signal.reason;
  } finally {
    unsubscribe();
    signal.removeEventListener('abort', onChange);
  }
}
