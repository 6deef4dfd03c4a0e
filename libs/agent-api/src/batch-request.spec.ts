import { describe, expect, it } from 'vitest';
import { AgentApiProtocolError } from './errors.js';
import { CSR_MAX_BYTES, MAX_CSR_BATCH } from './limits.js';
import { parseX509SvidBatchRequest } from './messages.js';

const ENTRY_ID = '00000000-0000-4000-8000-000000000001';
const request = (overrides: Record<string, unknown> = {}) => ({ entry_id: ENTRY_ID, csr: 'pem', ...overrides });

describe('parseX509SvidBatchRequest', () => {
  it('returns the requests in order', () => {
    const body = { csrs: [request(), request({ entry_id: 'other', csr: 'second' })] };
    expect(parseX509SvidBatchRequest(body)).toEqual([
      { entryId: ENTRY_ID, csr: 'pem' },
      { entryId: 'other', csr: 'second' },
    ]);
  });

  it(`accepts ${MAX_CSR_BATCH} requests and csrs of ${CSR_MAX_BYTES} characters`, () => {
    const csrs = Array.from({ length: MAX_CSR_BATCH }, () => request({ csr: 'x'.repeat(CSR_MAX_BYTES) }));
    expect(parseX509SvidBatchRequest({ csrs })).toHaveLength(MAX_CSR_BATCH);
  });

  it.each<[string, unknown, string]>([
    ['no body', undefined, 'body: must be a json object'],
    ['an array body', [request()], 'body: must be a json object'],
    ['a string body', 'csrs', 'body: must be a json object'],
    ['no csrs', {}, `csrs: must be an array of 1 to ${MAX_CSR_BATCH} requests, got undefined`],
    ['csrs null', { csrs: null }, `csrs: must be an array of 1 to ${MAX_CSR_BATCH} requests, got null`],
    ['csrs an object', { csrs: request() }, `csrs: must be an array of 1 to ${MAX_CSR_BATCH} requests, got object`],
    ['an empty batch', { csrs: [] }, `csrs: must be an array of 1 to ${MAX_CSR_BATCH} requests, got 0 items`],
    [
      'a batch too large',
      { csrs: Array.from({ length: MAX_CSR_BATCH + 1 }, () => request()) },
      `csrs: must be an array of 1 to ${MAX_CSR_BATCH} requests, got ${MAX_CSR_BATCH + 1} items`,
    ],
    [
      'an unknown top-level field with a bad batch',
      { csrs: [], extra: 1 },
      `extra: unknown field; csrs: must be an array of 1 to ${MAX_CSR_BATCH} requests, got 0 items`,
    ],
    ['an unknown top-level field', { csrs: [request()], ttl: 5 }, 'ttl: unknown field'],
    ['an item that is not an object', { csrs: [request(), 'pem'] }, 'csrs.1: must be an object with entry_id and csr'],
    ['an item that is null', { csrs: [null] }, 'csrs.0: must be an object with entry_id and csr'],
    ['an item that is an array', { csrs: [[ENTRY_ID, 'pem']] }, 'csrs.0: must be an object with entry_id and csr'],
    ['an unknown item field', { csrs: [request({ spiffe_id: 'x' })] }, 'csrs.0.spiffe_id: unknown field'],
    ['no entry_id', { csrs: [{ csr: 'pem' }] }, 'csrs.0.entry_id: must be a string'],
    ['a numeric entry_id', { csrs: [request({ entry_id: 7 })] }, 'csrs.0.entry_id: must be a string'],
    ['no csr', { csrs: [{ entry_id: ENTRY_ID }] }, 'csrs.0.csr: must be a string'],
    ['a csr of bytes', { csrs: [request({ csr: [48, 130] })] }, 'csrs.0.csr: must be a string'],
    [
      'a csr too long',
      { csrs: [request(), request({ csr: 'x'.repeat(CSR_MAX_BYTES + 1) })] },
      `csrs.1.csr: must be at most ${CSR_MAX_BYTES} characters`,
    ],
    [
      'several failures, all listed in order',
      { csrs: [request({ csr: 1, extra: true }), request(), {}], more: [] },
      'more: unknown field; csrs.0.extra: unknown field; csrs.0.csr: must be a string; ' +
        'csrs.2.entry_id: must be a string; csrs.2.csr: must be a string',
    ],
  ])('refuses %s', (_case, body, message) => {
    let thrown: unknown;
    try {
      parseX509SvidBatchRequest(body);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(AgentApiProtocolError);
    expect(thrown).toMatchObject({ message });
  });
});
