import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createRootLogger, PinoLoggerService } from './logging.js';

function capture(): { lines: () => Record<string, unknown>[]; stream: Writable } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk.toString('utf8'));
      done();
    },
  });
  return { stream, lines: () => chunks.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

describe('logging', () => {
  it('redacts secret fields at the top level, one object down, and the authorization header', () => {
    const { stream, lines } = capture();
    const logger = createRootLogger('info', stream);
    logger.info(
      {
        token: 'join-token-secret',
        privateKey: '-----BEGIN PRIVATE KEY-----',
        kek: 'kek-secret',
        nested: { password: 'pw', svid: 'svid-secret', key: 'k', spiffeId: 'spiffe://example.org/ok' },
        req: { headers: { authorization: 'Bearer sigil_admin_secret' } },
      },
      'something happened',
    );
    const [line] = lines();
    const text = JSON.stringify(line);
    for (const secret of [
      'join-token-secret',
      'PRIVATE KEY',
      'kek-secret',
      '"pw"',
      'svid-secret',
      'sigil_admin_secret',
    ]) {
      expect(text).not.toContain(secret);
    }
    expect(line?.['token']).toBe('[redacted]');
    expect((line?.['nested'] as Record<string, unknown>)['spiffeId']).toBe('spiffe://example.org/ok');
  });

  it('maps Nest logger calls to JSON lines with context, fields and level', () => {
    const { stream, lines } = capture();
    const service = new PinoLoggerService(createRootLogger('debug', stream));
    service.log({ msg: 'agent attested', agentId: 'spiffe://example.org/sigil/agent/x' }, 'AgentsService');
    service.warn('plain text', 'Database');
    service.error('failed', 'stack trace here', 'KeyManager');
    service.error(new Error('boom'), 'ErrorFilter');
    // Nest's own start-up chatter is demoted to debug.
    service.log('Mapped {/v1/entries, GET} route', 'RouterExplorer');
    expect(lines()).toMatchObject([
      { level: 30, context: 'AgentsService', msg: 'agent attested', agentId: 'spiffe://example.org/sigil/agent/x' },
      { level: 40, context: 'Database', msg: 'plain text' },
      { level: 50, context: 'KeyManager', msg: 'failed', stack: 'stack trace here' },
      { level: 50, context: 'ErrorFilter', msg: 'boom', err: { message: 'boom' } },
      { level: 20, context: 'RouterExplorer', msg: 'Mapped {/v1/entries, GET} route' },
    ]);
  });
});
