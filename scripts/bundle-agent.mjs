#!/usr/bin/env node
// `npm run build`'s second step: bundles the compiled agent (dist/apps/agent, from `tsc -b`) into dist/agent/, which
// bin/sigil-agent.js runs. One minified module graph instead of ~700 files: the idle agent holds ~10 MiB less (the
// modules' source text and per-module records; bench/README.md, "The agent as one bundle"). Nothing of the agent's
// behaviour changes: the same compiled modules, split where they are loaded with `import()` (each command, the agent
// itself, its metrics), so what loads lazily still does.
//
// Left outside (loaded from node_modules at run time):
// - koffi: a native addon.
// - the packages libs/spiffe loads with `require` on first use (`LOADED_ON_FIRST_USE`: @peculiar/x509, jose,
//   reflect-metadata), which must be the one instance every importer sees. reflect-metadata is also imported at start
//   (the configuration's decorators), so it is external; the other two must not be reached by any import the bundle
//   keeps (an external import would be kept and load them at start), and the build fails if one gets in.
// class-validator is taken from its ES build (same version and code as its CommonJS `main`), so that the validators
// the configuration does not use (libphonenumber-js with them) are left out.
//
// What a bundle cannot do, and the agent does not do: run a worker thread from a file next to a module
// (`@sigil/pki`'s signing pool, a server-only path) or a pino transport (its workers are found through `__dirname`).
//
// The files are written only when every check passes. dist/agent/meta.json is esbuild's metafile: which compiled
// modules each chunk holds (test/e2e/cli-lazy-load reads it to tell which packages a traced `sigil-agent` process
// loaded). Each chunk has a source map beside it (without the sources' text); node uses them with
// `--enable-source-maps`.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { LOADED_ON_FIRST_USE } from '../libs/spiffe/dist/lazy-modules.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const OUT_DIR = 'dist/agent';
const packagePattern = (names) =>
  new RegExp(`(?:^|/)node_modules/(?:${names.map((name) => name.replace(/[./]/g, '\\$&')).join('|')})/`);
/** Packages that must not be inside the bundle. */
const OUTSIDE = packagePattern(Object.values(LOADED_ON_FIRST_USE));
/** The agent never loads the server's framework (issue 13: @nestjs/common alone cost it ~30 MiB). */
const SERVER_FRAMEWORK = packagePattern(['@nestjs/[^/]+', 'fastify', 'typeorm', 'pg', '@electric-sql/[^/]+']);

const { metafile, outputFiles } = await build({
  absWorkingDir: ROOT,
  entryPoints: ['dist/apps/agent/main.js'],
  outdir: OUT_DIR,
  write: false,
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  minify: true,
  // Class and function names as written: pino's error serializer logs `err.constructor.name` as the error's type.
  keepNames: true,
  sourcemap: 'linked',
  sourcesContent: false,
  external: ['koffi', LOADED_ON_FIRST_USE.reflectMetadata],
  alias: { 'class-validator': 'class-validator/esm2015/index.js' },
  // The compiled JavaScript is bundled, not the sources: no tsconfig `paths` may point an import at a .ts file.
  tsconfigRaw: {},
  // CommonJS packages inside an ES module bundle call `require` for Node's built-ins.
  banner: {
    js: "import { createRequire as __sigilCreateRequire } from 'node:module'; const require = __sigilCreateRequire(import.meta.url);",
  },
  metafile: true,
  logLevel: 'warning',
});

const inputs = Object.keys(metafile.inputs);
const problems = [
  ...inputs.filter((input) => OUTSIDE.test(input)).map((input) => `${input}: must stay in node_modules`),
  ...inputs.filter((input) => SERVER_FRAMEWORK.test(input)).map((input) => `${input}: the server's framework`),
  ...inputs.filter((input) => input.endsWith('.ts')).map((input) => `${input}: a TypeScript source`),
];
if (problems.length > 0) {
  console.error(`bundle-agent: not written, these must not be inside the agent's bundle:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
await rm(join(ROOT, OUT_DIR), { recursive: true, force: true });
await mkdir(join(ROOT, OUT_DIR), { recursive: true });
for (const file of outputFiles) await writeFile(file.path, file.contents);
await writeFile(join(ROOT, OUT_DIR, 'meta.json'), JSON.stringify(metafile));
