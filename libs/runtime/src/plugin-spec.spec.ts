import { describe, expect, it } from 'vitest';
import { parseOptionBoolean, parseOptionDurationMs, parseOptionList, parsePluginSpec } from './plugin-spec.js';

describe('parsePluginSpec', () => {
  it.each([
    ['unix', { type: 'unix', options: {} }],
    [
      'docker:docker_socket_path=unix:///var/run/docker.sock',
      { type: 'docker', options: { docker_socket_path: 'unix:///var/run/docker.sock' } },
    ],
    [
      'k8s:skip_kubelet_verification=true,node_name_env=MY_NODE_NAME',
      { type: 'k8s', options: { skip_kubelet_verification: 'true', node_name_env: 'MY_NODE_NAME' } },
    ],
    ['docker:env_allow_list=A;B', { type: 'docker', options: { env_allow_list: 'A;B' } }],
    ['x:a=b=c', { type: 'x', options: { a: 'b=c' } }],
  ])('%s', (text, expected) => {
    expect(parsePluginSpec(text)).toEqual(expected);
  });

  it.each([
    ['Docker', 'must be <type>[:<option>=<value>,…] with a type of a-z, 0-9 and _, got "Docker"'],
    ['docker:', 'docker: options must be <option>=<value> separated by commas, got ""'],
    ['docker:a', 'docker: options must be <option>=<value> separated by commas, got "a"'],
    ['docker:a=', 'docker: options must be <option>=<value> separated by commas, got "a="'],
    ['docker:a=1,a=2', 'docker: option a is set twice'],
  ])('refuses %s', (text, problem) => {
    expect(parsePluginSpec(text)).toBe(problem);
  });
});

describe('parsePluginSpec and __proto__', () => {
  it('keeps an option named __proto__ as an option (so the unknown-option check refuses it), not a prototype', () => {
    const spec = parsePluginSpec('x509pop:__proto__=1,ca_bundle=/c.pem');
    expect(typeof spec === 'string' ? spec : Object.keys(spec.options)).toEqual(['__proto__', 'ca_bundle']);
  });
});

describe('parseOptionList (`;`-separated option values)', () => {
  it.each([
    ['A;B', ['A', 'B']],
    [' A ; B ;', ['A', 'B']],
    ['A', ['A']],
    ['ns:sa;ns2:sa2', ['ns:sa', 'ns2:sa2']],
    ['', []],
    [';;', []],
  ])('%j', (text, items) => {
    expect(parseOptionList(text)).toEqual(items);
  });
});

describe('parseOptionBoolean', () => {
  it('takes true and false', () => {
    expect(parseOptionBoolean('true')).toBe(true);
    expect(parseOptionBoolean('false')).toBe(false);
  });
  it.each(['yes', 'TRUE', '1', ''])('refuses %j', (text) => {
    expect(parseOptionBoolean(text)).toBe(`must be true or false, got ${JSON.stringify(text)}`);
  });
});

describe('parseOptionDurationMs', () => {
  it.each([
    ['500ms', 500],
    ['5s', 5000],
    ['1m30s', 90_000],
    ['2', 2000],
  ])('%s', (text, ms) => {
    expect(parseOptionDurationMs(text, 1, 600_000)).toBe(ms);
  });

  it('names the bounds and the value', () => {
    expect(parseOptionDurationMs('20m', 100, 600_000)).toBe('must be from 100ms to 10m, got "20m"');
    expect(parseOptionDurationMs('0s', 1000, 60_000)).toBe('must be from 1s to 1m, got "0s"');
  });

  it('states the syntax for what is not a duration', () => {
    expect(parseOptionDurationMs('soon', 1, 1000)).toBe(
      'must be a duration such as 90s, 15m or 1h30m (a bare number is seconds), got "soon"',
    );
  });
});
