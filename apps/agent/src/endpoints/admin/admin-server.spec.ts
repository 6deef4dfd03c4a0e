import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LogLevelControl, createServiceLogger } from '@sigil/logging';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { unixJsonRequest } from '../../../../../test/support/unix-http.js';
import { AgentAdminServer } from './admin-server.js';

const send = unixJsonRequest;

describe('AgentAdminServer (the agent admin socket: /v1/logger)', () => {
  let scratch: string;
  let socketPath: string;
  let server: AgentAdminServer;
  const root = createServiceLogger('sigil-agent', 'info', { write: () => undefined });

  beforeEach(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'sigil-agent-admin-'));
    socketPath = join(scratch, 'private', 'admin.sock');
    root.level = 'info';
    server = new AgentAdminServer(socketPath, new LogLevelControl(root, 'info'));
    await server.prepare();
    await server.start();
  });
  afterEach(async () => {
    await server.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  it('gets, sets (any case) and resets the root logger level', async () => {
    expect(await send(socketPath, 'GET', '/v1/logger')).toEqual({
      status: 200,
      body: { current_level: 'info', launch_level: 'info' },
    });
    expect(await send(socketPath, 'PUT', '/v1/logger', '{"level":"DEBUG"}')).toEqual({
      status: 200,
      body: { current_level: 'debug', launch_level: 'info' },
    });
    expect(root.level).toBe('debug');
    expect(await send(socketPath, 'DELETE', '/v1/logger')).toEqual({
      status: 200,
      body: { current_level: 'info', launch_level: 'info' },
    });
    expect(root.level).toBe('info');
  });

  it.each([
    [
      'an unknown level',
      '{"level":"loud"}',
      'application/json',
      400,
      /^level: must be one of fatal, error, warn, info, debug, trace, got "loud"$/,
    ],
    ['a level that is no string', '{"level":3}', 'application/json', 400, /^level: must be one of .*, got 3$/],
    ['an unknown field', '{"level":"info","extra":1}', 'application/json', 400, /^extra: unknown field$/],
    ['a body that is no object', '["info"]', 'application/json', 400, /^body: must be a JSON object$/],
    ['malformed JSON', '{"level":', 'application/json', 400, /^body: must be JSON$/],
    ['another content type', 'level=info', 'text/plain', 415, /^body: content-type must be application\/json$/],
    [
      'a body over 1 KiB',
      JSON.stringify({ level: 'x'.repeat(2000) }),
      'application/json',
      413,
      /^body: at most 1024 bytes$/,
    ],
  ])('refuses %s and leaves the level alone', async (_, body, type, status, message) => {
    const answer = await send(socketPath, 'PUT', '/v1/logger', body, type);
    expect(answer.status).toBe(status);
    expect(answer.body).toMatchObject({ error: 'invalid_argument', message: expect.stringMatching(message) });
    expect(root.level).toBe('info');
  });

  it('answers 404 elsewhere and 405 for other methods', async () => {
    expect(await send(socketPath, 'GET', '/v1/entries')).toEqual({
      status: 404,
      body: { error: 'not_found', message: 'no route GET /v1/entries' },
    });
    expect((await send(socketPath, 'POST', '/v1/logger', '{}')).status).toBe(405);
  });

  it('refuses to take over a path that is no socket, or a socket another agent serves', async () => {
    const plain = join(scratch, 'private', 'plain');
    await writeFile(plain, '');
    await expect(new AgentAdminServer(plain, new LogLevelControl(root, 'info')).start()).rejects.toThrow(
      `admin socket path ${plain} exists and is not a socket`,
    );
    await expect(new AgentAdminServer(socketPath, new LogLevelControl(root, 'info')).start()).rejects.toThrow(
      `admin socket ${socketPath} is in use: is another sigil-agent running?`,
    );
  });
});
