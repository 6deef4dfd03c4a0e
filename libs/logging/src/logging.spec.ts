import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createJsonLogger, PinoLoggerService, REDACTED_FIELDS } from './logging.js';

function capture(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  let text = '';
  const stream = new Writable({
    write: (chunk: Buffer, _encoding, done) => {
      text += chunk.toString('utf8');
      done();
    },
  });
  const lines = () =>
    text
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  return { stream, lines };
}

describe('@sigil/logging', () => {
  it.each(REDACTED_FIELDS)('redacts %s at the top level and one object down', (field) => {
    const { stream, lines } = capture();
    const logger = new PinoLoggerService(createJsonLogger({ service: 'test', level: 'info', destination: stream }));
    logger.log({ msg: 'secret inside', [field]: 'SECRET-VALUE', nested: { [field]: 'SECRET-VALUE' } }, 'Ctx');
    expect(JSON.stringify(lines())).not.toContain('SECRET-VALUE');
    expect(lines()[0]).toMatchObject({ [field]: '[redacted]', nested: { [field]: '[redacted]' }, context: 'Ctx' });
  });

  it('redacts authorization headers of a logged request', () => {
    const { stream, lines } = capture();
    createJsonLogger({ service: 'test', level: 'info', destination: stream }).info(
      { req: { headers: { authorization: 'Bearer sigil_admin_x' } } },
      'request',
    );
    expect(JSON.stringify(lines())).not.toContain('sigil_admin_x');
  });

  it('demotes Nest start-up chatter to debug and keeps the service name', () => {
    const { stream, lines } = capture();
    const logger = new PinoLoggerService(createJsonLogger({ service: 'svc', level: 'info', destination: stream }));
    logger.log('Mapped {/healthz, GET} route', 'RouterExplorer');
    logger.log('socket listening', 'WorkloadApiServer');
    expect(lines()).toEqual([expect.objectContaining({ service: 'svc', msg: 'socket listening', level: 30 })]);
  });
});
