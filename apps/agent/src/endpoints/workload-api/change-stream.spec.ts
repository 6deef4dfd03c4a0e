import { describe, expect, it } from 'vitest';
import { changes } from './change-stream.js';

class Source {
  readonly listeners = new Set<() => void>();
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  change(): void {
    for (const listener of this.listeners) listener();
  }
}

describe('changes', () => {
  it('ticks at once, then once per batch of changes, and unsubscribes when aborted', async () => {
    const source = new Source();
    const controller = new AbortController();
    const ticks = changes(source, controller.signal);
    expect(await ticks.next()).toEqual({ done: false, value: undefined });
    // three changes while the consumer is busy collapse into one tick
    source.change();
    source.change();
    source.change();
    expect(await ticks.next()).toEqual({ done: false, value: undefined });
    const third = ticks.next();
    let settled = false;
    void third.then(() => (settled = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBe(false);
    source.change();
    expect(await third).toEqual({ done: false, value: undefined });
    const fourth = ticks.next();
    controller.abort(new Error('stopped'));
    await expect(fourth).rejects.toThrow('stopped');
    expect(source.listeners.size).toBe(0);
  });
});
