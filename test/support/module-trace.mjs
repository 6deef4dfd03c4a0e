// `node --import ./test/support/module-trace.mjs …`: appends to the file SIGIL_MODULE_TRACE names every module the
// process loads, one URL or path a line: each ESM resolution (a loader hook, which runs on its own thread and sees
// every `import`, static or dynamic) and, at exit, every CommonJS module in require.cache (which the hook does not see
// when a CommonJS package requires another). Used by test/e2e/cli-lazy-load.e2e-spec.ts.
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';

const traceFile = process.env.SIGIL_MODULE_TRACE;
if (!traceFile) throw new Error('module-trace: set SIGIL_MODULE_TRACE to the file to append to');

const hooks = `
import { appendFileSync } from 'node:fs';
let file;
export function initialize(data) { file = data.file; }
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  if (!result.url.startsWith('node:')) appendFileSync(file, result.url + '\\n');
  return result;
}`;
register(`data:text/javascript,${encodeURIComponent(hooks)}`, { data: { file: traceFile } });

const require = createRequire(import.meta.url);
process.on('exit', () => appendFileSync(traceFile, Object.keys(require.cache).join('\n') + '\n'));
