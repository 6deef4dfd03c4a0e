import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { PinoLoggerService, createRootLogger } from './logging.js';

function capture(): { lines: () => Record<string, unknown>[]; stream: Writable } {
  let text = '';
  const stream = new Writable({
    write: (chunk: Buffer, _encoding, done) => {
      text += chunk.toString('utf8');
      done();
    },
  });
  return {
    stream,
    lines: () =>
      text
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line)),
  };
}

const PEM =
  '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n';

describe('agent logging', () => {
  it('writes JSON lines with the service, context and fields', () => {
    const { stream, lines } = capture();
    new PinoLoggerService(createRootLogger('info', stream)).log(
      { msg: 'node attested', agentId: 'spiffe://x/y' },
      'AgentManager',
    );
    expect(lines()).toEqual([
      expect.objectContaining({
        level: 30,
        service: 'sigil-agent',
        context: 'AgentManager',
        agentId: 'spiffe://x/y',
        msg: 'node attested',
      }),
    ]);
  });

  it('never writes keys, tokens or SVIDs, at the top level or one object down', () => {
    const { stream, lines } = capture();
    const logger = new PinoLoggerService(createRootLogger('debug', stream));
    logger.warn({ msg: 'attesting', privateKeyPem: PEM, joinToken: 'secret-token', token: 'secret-token' });
    logger.debug({
      msg: 'credentials',
      credentials: { privateKey: PEM, svid: 'MIIB…' },
      nonce: 'abc',
      signature: 'def',
    });
    const output = JSON.stringify(lines());
    expect(output).not.toContain('PRIVATE KEY');
    expect(output).not.toContain('secret-token');
    expect(output).not.toContain('MIIB');
    expect(lines()[0]).toMatchObject({ privateKeyPem: '[redacted]', joinToken: '[redacted]', token: '[redacted]' });
    expect(lines()[1]).toMatchObject({
      credentials: { privateKey: '[redacted]', svid: '[redacted]' },
      nonce: '[redacted]',
    });
  });

  it('respects the level', () => {
    const { stream, lines } = capture();
    new PinoLoggerService(createRootLogger('warn', stream)).debug('per request detail', 'Http');
    expect(lines()).toEqual([]);
  });
});
