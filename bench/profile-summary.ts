/**
 * `node dist/bench/profile-summary.js FILE.cpuprofile [TOP] [--after FUNCTION]`: where a V8 CPU profile (node
 * --cpu-prof, e.g. from `bench:scale --cpu-prof DIR`) spends its time: the busy (not idle) milliseconds and shares
 * of the TOP (default 30) functions by self time and by inclusive time (each function counted once per sample,
 * however deep it recurses). `--after FUNCTION` leaves out the samples before the first one with FUNCTION on its stack
 * (e.g. `--after createEntries`: the server's start is not counted).
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

function main(): void {
  const args = process.argv.slice(2);
  const afterAt = args.indexOf('--after');
  const after = afterAt >= 0 ? args.splice(afterAt, 2)[1] : undefined;
  const [file, topText = '30'] = args;
  if (file === undefined) throw new Error('usage: profile-summary.js FILE.cpuprofile [TOP] [--after FUNCTION]');
  const top = Number(topText);
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const parents = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
  const stack = (id: number): ProfileNode[] => {
    const frames: ProfileNode[] = [];
    for (let at: number | undefined = id; at !== undefined; at = parents.get(at)) frames.push(nodes.get(at)!);
    return frames;
  };
  const name = (node: ProfileNode): string => {
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url.replace(/.*node_modules\//, '').replace(/^file:\/\/.*\/dist\//, 'dist/');
    return `${functionName || '(anonymous)'} ${where}:${lineNumber + 1}`;
  };
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let started = after === undefined;
  let idle = 0;
  let busy = 0;
  profile.samples.forEach((id, index) => {
    const frames = stack(id);
    if (!started) started = frames.some((frame) => frame.callFrame.functionName === after);
    if (!started) return;
    const micros = profile.timeDeltas[index] ?? 0;
    if (frames[0]!.callFrame.functionName === '(idle)') {
      idle += micros;
      return;
    }
    busy += micros;
    self.set(name(frames[0]!), (self.get(name(frames[0]!)) ?? 0) + micros);
    for (const key of new Set(frames.map(name))) inclusive.set(key, (inclusive.get(key) ?? 0) + micros);
  });
  const seconds = (micros: number) => (micros / 1e6).toFixed(2);
  console.log(`busy ${seconds(busy)} s, idle ${seconds(idle)} s${after ? ` (from the first ${after})` : ''}`);
  for (const [title, times] of [
    ['self', self],
    ['inclusive', inclusive],
  ] as const) {
    console.log(`-- ${title}`);
    for (const [key, micros] of [...times].sort((a, b) => b[1] - a[1]).slice(0, top)) {
      const share = ((100 * micros) / busy).toFixed(1);
      console.log(`${(micros / 1e3).toFixed(0).padStart(7)} ms ${share.padStart(5)} %  ${key}`);
    }
  }
}

main();
