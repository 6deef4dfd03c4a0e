/**
 * `read`, at most once per `ttlMs`: calls within that time get the last value, and calls while a read is under way
 * share it, so a flood of callers (a scrape or probe flood) costs one read per `ttlMs`. A failed read is not kept.
 */
export function cachedRead<T>(read: () => Promise<T>, ttlMs: number, now: () => number = Date.now): () => Promise<T> {
  let last: { value: T; atMs: number } | undefined;
  let pending: Promise<T> | undefined;
  return () => {
    if (last && now() - last.atMs < ttlMs) return Promise.resolve(last.value);
    pending ??= read().then(
      (value) => {
        last = { value, atMs: now() };
        pending = undefined;
        return value;
      },
      (error: unknown) => {
        pending = undefined;
        throw error;
      },
    );
    return pending;
  };
}
