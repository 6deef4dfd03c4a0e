import { describe, expect, it, vi } from 'vitest';
import { InProcessEntryChangeNotifier } from './entry-change-notifier.js';

describe('InProcessEntryChangeNotifier', () => {
  it('delivers each revision to every subscriber, never inside the notifying call', async () => {
    const notifier = new InProcessEntryChangeNotifier();
    const first: number[] = [];
    const second: number[] = [];
    notifier.subscribe((revision) => first.push(revision));
    const unsubscribe = notifier.subscribe((revision) => second.push(revision));
    const notifying = notifier.notify(1);
    expect(first).toEqual([]);
    await notifying;
    await vi.waitFor(() => expect(first).toEqual([1]), { timeout: 10_000 });
    expect(second).toEqual([1]);

    unsubscribe();
    await notifier.notify(2);
    await vi.waitFor(() => expect(first).toEqual([1, 2]), { timeout: 10_000 });
    expect(second).toEqual([1]);
  });

  it('keeps delivering to the others when a listener throws', async () => {
    const notifier = new InProcessEntryChangeNotifier();
    const seen: number[] = [];
    notifier.subscribe(() => {
      throw new Error('listener bug');
    });
    notifier.subscribe((revision) => seen.push(revision));
    await notifier.notify(7);
    await vi.waitFor(() => expect(seen).toEqual([7]), { timeout: 10_000 });
  });

  it('drops its listeners when closed', async () => {
    const notifier = new InProcessEntryChangeNotifier();
    const seen: number[] = [];
    notifier.subscribe((revision) => seen.push(revision));
    await notifier.close();
    await notifier.notify(3);
    await new Promise((resolve) => setImmediate(resolve));
    expect(seen).toEqual([]);
  });
});
