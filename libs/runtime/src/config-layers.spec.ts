import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type ConfigSource, flagName, layerConfig, readJsonConfigFile } from './config-layers.js';
import { parseDurationSeconds } from './config-value.js';

const SOURCES = {
  port: { flag: 'port', env: 'X_PORT' },
  data_dir: { flag: 'dataDir', env: 'X_DATA_DIR' },
  tags: { flag: 'tag', env: 'X_TAGS' },
  secret: { flag: null, env: 'X_SECRET', file: false },
} satisfies Record<string, ConfigSource>;

const dir = mkdtempSync(join(tmpdir(), 'sigil-config-layers-'));
const writeFile = (name: string, text: string): string => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

describe('layerConfig', () => {
  it('takes a flag over its variable over the file, and names each value by where it came from', () => {
    const { values, label } = layerConfig(
      SOURCES,
      { port: '1' },
      { X_PORT: '2', X_DATA_DIR: '/env' },
      { port: 3, data_dir: '/file', tags: ['a'] },
    );
    expect(values).toEqual({ port: '1', data_dir: '/env', tags: ['a'] });
    expect(label.get('port')).toBe('--port');
    expect(label.get('data_dir')).toBe('X_DATA_DIR');
    expect(label.get('tags')).toBe('tags');
  });

  it('counts an empty variable and a repeatable flag given no times as unset', () => {
    const { values, label } = layerConfig(SOURCES, { tag: [] }, { X_DATA_DIR: '' }, { data_dir: '/file' });
    expect(values).toEqual({ data_dir: '/file' });
    expect(label.get('tags')).toBe('--tag');
  });

  it('never takes a file-less key from the file, and names an unset key by its flag, else its variable', () => {
    const { values, label } = layerConfig(SOURCES, {}, {}, { secret: 'from-file' });
    expect(values).toEqual({});
    expect(label.get('secret')).toBe('X_SECRET');
    expect(label.get('port')).toBe('--port');
  });

  it('writes flags in kebab case', () => {
    expect(flagName('agentSignMaxInFlight')).toBe('--agent-sign-max-in-flight');
  });
});

describe('readJsonConfigFile', () => {
  it('returns the object and reports unknown keys, keys the file may not hold, and nulls', () => {
    const path = writeFile('mixed.json', JSON.stringify({ port: 1, colour: 'blue', secret: 's', data_dir: null }));
    const problems: string[] = [];
    expect(readJsonConfigFile(path, SOURCES, problems)).toMatchObject({ port: 1 });
    expect(problems).toEqual([
      `colour: unknown key in config file ${path}`,
      `secret: unknown key in config file ${path}`,
      `data_dir: must not be null in config file ${path} (leave the key out for the default)`,
    ]);
  });

  it.each([
    ['missing.json', null, /^--config: cannot read .*missing\.json: ENOENT$/],
    ['bad.json', '{ port: }', /^--config: .*bad\.json is not valid JSON: /],
    ['array.json', '[1]', /^--config: .*array\.json must hold a JSON object$/],
    ['null.json', 'null', /^--config: .*null\.json must hold a JSON object$/],
  ])('reports %s as one problem and returns no values', (name, text, message) => {
    const path = text === null ? join(dir, name) : writeFile(name, text);
    const problems: string[] = [];
    expect(readJsonConfigFile(path, SOURCES, problems)).toEqual({});
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(message);
  });
});

describe('parseDurationSeconds (config values)', () => {
  it.each([
    ['1h30m', 5400],
    ['90s', 90],
    ['7d', 604800],
    ['3600', 3600],
    [120, 120],
  ])('reads %j as %d seconds', (value, seconds) => {
    expect(parseDurationSeconds(value)).toBe(seconds);
  });

  it.each([['1.5s'], ['1 hour'], [-1], [1.5], [null], [['1h']], ['']])('refuses %j', (value) => {
    expect(parseDurationSeconds(value)).toBeUndefined();
  });
});
