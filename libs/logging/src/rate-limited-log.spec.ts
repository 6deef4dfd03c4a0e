import { describe, expect, it } from 'vitest';
import { LOG_PATH_MAX_LENGTH, RateLimitedLog, logPath, truncateForLog } from './rate-limited-log.js';

/** A logger that records what reaches it, and a clock moved by hand. */
function setup(options: { linesPerInterval?: number; intervalMs?: number; maxKeys?: number } = {}) {
  const lines: { level: string; fields: Record<string, unknown> }[] = [];
  const record = (level: string) => (fields: unknown) =>
    lines.push({ level, fields: fields as Record<string, unknown> });
  let now = 1_000_000;
  const log = new RateLimitedLog(
    { warn: record('warn'), error: record('error'), log: record('log') },
    { linesPerInterval: 3, intervalMs: 1_000, ...options, now: () => now, timer: false },
  );
  return { log, lines, advance: (ms: number) => (now += ms) };
}

describe('RateLimitedLog', () => {
  it('lets N lines per key through per interval, then one summary with the dropped count', () => {
    const { log, lines, advance } = setup();
    const written = Array.from({ length: 1_000 }, (_, i) => log.warn('refused', { msg: 'request refused', i }));
    expect(written.filter(Boolean)).toHaveLength(3);
    expect(lines.map((line) => line.fields['i'])).toEqual([0, 1, 2]);

    advance(999);
    log.flush();
    expect(lines).toHaveLength(3);
    advance(1);
    log.flush();
    expect(lines).toHaveLength(4);
    expect(lines[3]).toEqual({
      level: 'warn',
      fields: {
        msg: 'log lines dropped: 997 more like "request refused" within 1000 ms',
        logKey: 'refused',
        dropped: 997,
        intervalMs: 1_000,
      },
    });
    log.flush();
    expect(lines).toHaveLength(4);
  });

  it('writes the summary before the first line of the next interval when no flush came', () => {
    const { log, lines, advance } = setup({ linesPerInterval: 1 });
    log.error('e', { msg: 'one' });
    log.error('e', { msg: 'two' });
    advance(1_000);
    expect(log.error('e', { msg: 'three' })).toBe(true);
    expect(lines.map((line) => [line.level, line.fields['msg']])).toEqual([
      ['error', 'one'],
      ['error', 'log lines dropped: 1 more like "two" within 1000 ms'],
      ['error', 'three'],
    ]);
  });

  it('writes no summary for an interval that dropped nothing', () => {
    const { log, lines, advance } = setup();
    log.log('k', { msg: 'a' });
    advance(5_000);
    log.flush();
    log.log('k', { msg: 'b' });
    expect(lines.map((line) => line.fields['msg'])).toEqual(['a', 'b']);
  });

  it('keeps a separate budget per key', () => {
    const { log, lines } = setup({ linesPerInterval: 2 });
    for (let i = 0; i < 10; i += 1) {
      log.warn('a', { msg: 'a' });
      log.warn('b', { msg: 'b' });
    }
    expect(lines.map((line) => line.fields['msg'])).toEqual(['a', 'b', 'a', 'b']);
  });

  it('tracks at most maxKeys keys; lines of further keys share one budget', () => {
    const { log, lines, advance } = setup({ linesPerInterval: 1, maxKeys: 2 });
    for (let i = 0; i < 1_000; i += 1) log.warn(`key-${i}`, { msg: `line ${i}` });
    expect(lines.map((line) => line.fields['msg'])).toEqual(['line 0', 'line 1', 'line 2']);
    advance(1_000);
    log.flush();
    expect(lines[3]?.fields).toMatchObject({ logKey: '(other)', dropped: 997 });
    expect(lines).toHaveLength(4);
  });

  it('close writes the pending summaries of running intervals', () => {
    const { log, lines } = setup({ linesPerInterval: 1 });
    log.warn('k', { msg: 'x' });
    log.warn('k', { msg: 'x' });
    log.close();
    expect(lines[1]?.fields).toMatchObject({ logKey: 'k', dropped: 1 });
  });

  it('refuses a budget that lets nothing through', () => {
    expect(() => new RateLimitedLog({ warn() {}, error() {}, log() {} }, { linesPerInterval: 0 })).toThrow(
      'linesPerInterval: must be an integer of at least 1',
    );
  });
});

describe('logPath', () => {
  it.each([
    ['/v1/entries?token=secret', '/v1/entries'],
    ['/v1/entries#frag?x', '/v1/entries'],
    ['/v1/entries', '/v1/entries'],
    ['?only=query', ''],
  ])('%s logs as %s', (url, expected) => expect(logPath(url)).toBe(expected));

  it('cuts a long path to the limit and marks the cut', () => {
    const logged = logPath(`/${'a'.repeat(10_000)}?q=1`);
    expect(logged).toHaveLength(LOG_PATH_MAX_LENGTH);
    expect(logged.endsWith('…')).toBe(true);
  });

  it('truncateForLog leaves short text alone', () => {
    expect(truncateForLog('short', 10)).toBe('short');
    expect(truncateForLog('0123456789abc', 10)).toBe('012345678…');
  });
});
