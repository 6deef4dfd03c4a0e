import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { type LazyCommand, lazyProgram } from './cli.js';

/** Three subcommands whose loads are counted; `entry` has a subcommand of its own. */
function commands(loaded: string[]): LazyCommand[] {
  const lazy = (name: string, build: () => Command): LazyCommand => ({
    name,
    description: `the ${name} command`,
    load: async () => {
      loaded.push(name);
      return build();
    },
  });
  return [
    lazy('run', () => new Command('run').option('--port <n>', 'port')),
    lazy('entry', () => new Command('entry').addCommand(new Command('show').description('show entries'))),
    lazy('healthcheck', () => new Command('healthcheck')),
  ];
}

describe('lazyProgram', () => {
  it.each([
    [['entry', 'show'], ['entry']],
    [['entry', '--help'], ['entry']],
    [['help', 'entry'], ['entry']],
    [['--help'], []],
    [['-V'], []],
    [['entyr'], []],
  ])('%j loads %j only', async (args, expected) => {
    const loaded: string[] = [];
    const program = await lazyProgram('sigil-test', 'a test CLI', commands(loaded), ['node', 'sigil-test', ...args]);
    expect(loaded).toEqual(expected);
    // Every subcommand is there, in order, with its description, loaded or not.
    expect(program.commands.map((each) => [each.name(), each.description()])).toEqual([
      ['run', 'the run command'],
      ['entry', 'the entry command'],
      ['healthcheck', 'the healthcheck command'],
    ]);
  });

  it('loads the whole tree without a command line', async () => {
    const loaded: string[] = [];
    const program = await lazyProgram('sigil-test', 'a test CLI', commands(loaded));
    expect(loaded).toEqual(['run', 'entry', 'healthcheck']);
    expect(program.commands[1]!.commands.map((each) => each.name())).toEqual(['show']);
    expect(program.commands[0]!.options.map((each) => each.long)).toEqual(['--port']);
  });

  it('the loaded command is the real one: its options and subcommands parse', async () => {
    const loaded: string[] = [];
    const program = await lazyProgram('sigil-test', 'a test CLI', commands(loaded), ['node', 'sigil-test', 'run']);
    const run = program.commands[0]!;
    run.action(() => undefined);
    await program.parseAsync(['node', 'sigil-test', 'run', '--port', '8081']);
    expect(run.opts()).toEqual({ port: '8081' });
    expect(program.version()).toMatch(/^\d+\.\d+\.\d+/);
  });
});
