import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createJsonLogger, formatTextLine, PinoLoggerService, REDACTED_FIELDS } from './logging.js';

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

  it('writes text lines with the same fields, redacted, values quoted when they hold spaces', () => {
    let text = '';
    const stream = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        text += chunk.toString('utf8');
        done();
      },
    });
    const logger = new PinoLoggerService(
      createJsonLogger({ service: 'svc', level: 'info', format: 'text', destination: stream }),
    );
    logger.warn({ msg: 'entry sync failed', retryInMs: 500, reason: 'no route to host', token: 'SECRET' }, 'EntrySync');
    expect(text).toMatch(
      /^\d{4}-\d\d-\d\dT[\d:.]+Z WARN {2}\[EntrySync\] entry sync failed retryInMs=500 reason="no route to host" token=\[redacted\]\n$/,
    );
    expect(formatTextLine('not json\n')).toBe('not json\n');
    expect(formatTextLine('{"time":"t","level":30,"msg":"m","a":"x=y","b":{"c":1}}')).toBe(
      't INFO  m a="x=y" b="{\\"c\\":1}"\n',
    );
  });

  it('appends to a log file created 0600', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sigil-log-'));
    try {
      const file = join(dir, 'agent.log');
      createJsonLogger({ service: 'svc', level: 'info', file }).info('first');
      createJsonLogger({ service: 'svc', level: 'info', file }).info('second');
      const lines = (await readFile(file, 'utf8')).trim().split('\n');
      expect(lines.map((line) => (JSON.parse(line) as { msg: string }).msg)).toEqual(['first', 'second']);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
