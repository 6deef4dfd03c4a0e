import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseStartTime, parseStatus, readStartTime, readStartTimeSync, readStatus } from './proc.js';

// A real line from /proc/<pid>/stat, with a comm that contains ") (" to exercise the parser.
const STAT_FIELDS_AFTER_COMM =
  'S 1 4242 4242 0 -1 4194560 1093 0 0 0 2 1 0 0 20 0 1 0 987654321 8224768 231 18446744073709551615';

describe('parseStartTime', () => {
  it.each([
    ['a plain comm', `4242 (sleep) ${STAT_FIELDS_AFTER_COMM}`],
    ['a comm with spaces and parentheses', `4242 (evil ) (name) ${STAT_FIELDS_AFTER_COMM}`],
  ])('reads field 22 with %s', (_case, stat) => {
    expect(parseStartTime(stat)).toBe(987654321n);
  });

  it.each([
    ['no comm', '4242 S 1'],
    ['too few fields', '4242 (sleep) S 1 4242'],
    ['a non-numeric start time', `4242 (sleep) ${STAT_FIELDS_AFTER_COMM.replace('987654321', 'x')}`],
  ])('rejects a stat line with %s', (_case, stat) => {
    expect(() => parseStartTime(stat)).toThrow('stat: field 22 (starttime) is missing or not a number');
  });
});

describe('parseStatus', () => {
  const status = [
    'Name:\tsleep',
    'Uid:\t1000\t1001\t1002\t1003',
    'Gid:\t2000\t2001\t2002\t2003',
    'Groups:\t4 27 100 ',
    '',
  ];

  it('reads real, effective, saved and fs ids and the supplementary groups', () => {
    expect(parseStatus(status.join('\n'))).toEqual({
      uids: [1000, 1001, 1002, 1003],
      gids: [2000, 2001, 2002, 2003],
      groups: [4, 27, 100],
    });
  });

  it('reads an empty Groups line as no supplementary groups', () => {
    expect(parseStatus(status.with(3, 'Groups:\t').join('\n')).groups).toEqual([]);
  });

  it.each([
    [
      'a missing Uid line',
      status.filter((line) => !line.startsWith('Uid')),
      'status: Uid must list 4 numeric ids, got null',
    ],
    ['a short Gid line', status.with(2, 'Gid:\t1 2'), 'status: Gid must list 4 numeric ids, got "\\t1 2"'],
    ['a bad group', status.with(3, 'Groups:\t4 x'), 'status: Groups must list numeric ids, got "\\t4 x"'],
  ])('rejects %s', (_case, lines, message) => {
    expect(() => parseStatus(lines.join('\n'))).toThrow(message);
  });
});

describe('reading procfs', () => {
  it('reads the start time of this process, the same way sync and async', async () => {
    const expected = BigInt(readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[19]!);
    expect(await readStartTime(process.pid)).toBe(expected);
    expect(readStartTimeSync(process.pid)).toBe(expected);
  });

  it('reads the effective uid and gid of this process', async () => {
    const status = await readStatus(process.pid);
    expect(status.uids[1]).toBe(process.geteuid!());
    expect(status.gids[1]).toBe(process.getegid!());
  });

  it('rejects for a pid that does not exist', async () => {
    await expect(readStartTime(2 ** 22 + 1)).rejects.toThrow(/ENOENT/);
  });
});
