import { Logger } from '@nestjs/common';
import { LOG_LINES_PER_INTERVAL } from '@sigil/logging';
import { afterEach, describe, expect, it } from 'vitest';
import { toErrorReply } from './error.filter.js';

/** Records what Nest's loggers write while a test runs. */
function captureNestLogs(): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  const record = (message: unknown) => lines.push(message as Record<string, unknown>);
  Logger.overrideLogger({ log: record, error: record, warn: record, debug: record, verbose: record, fatal: record });
  return lines;
}

describe('toErrorReply', () => {
  afterEach(() => Logger.overrideLogger(false));

  it('answers an unknown error with 500 and an errorId, logged with the path only', () => {
    const lines = captureNestLogs();
    const reply = toErrorReply(new Error('boom'), { method: 'GET', url: '/v1/entries?token=secret-query' }, 1024);
    expect(reply).toMatchObject({ status: 500, body: { error: 'internal' } });
    expect(lines[0]).toMatchObject({ msg: 'unhandled error', errorId: reply.body.errorId, path: '/v1/entries' });
    expect(JSON.stringify(lines)).not.toContain('secret-query');
  });

  it('logs a bounded number of lines when a caller triggers the same error over and over', () => {
    const lines = captureNestLogs();
    const error = new TypeError('caller-triggered');
    for (let i = 0; i < 1_000; i += 1) toErrorReply(error, { method: 'POST', url: `/v1/entries?i=${i}` }, 1024);
    expect(lines.length).toBeLessThanOrEqual(LOG_LINES_PER_INTERVAL);
  });
});
