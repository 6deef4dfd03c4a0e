#!/usr/bin/env node
// `npm run build`'s second step: bundles the compiled agent (dist/apps/agent, from `tsc -b`) into dist/agent/, which
// bin/sigil-agent.js runs. One minified module graph instead of ~700 files: the idle agent holds ~10 MiB less (the
// modules' source text and per-module records; bench/README.md, "The idle agent as one bundle"). Nothing of the
// agent's behaviour changes: the same compiled modules, split where they are loaded with `import()` (each command, the
// agent itself, its metrics), so what loads lazily still does.
//
// Left outside (loaded from node_modules at run time):
// - koffi: a native addon.
// - reflect-metadata, @peculiar/x509, jose: libs/spiffe loads them on first use with `require`, and a module loaded that
//   way must be the same instance every importer sees; the build fails if either of the last two ends up inside.
// class-validator is taken from its ES build (same version and code as its CommonJS `main`), so that the validators
// the configuration does not use (libphonenumber-js with them) are left out.
//
// dist/agent/meta.json is esbuild's metafile: which compiled modules each chunk holds (test/e2e/cli-lazy-load reads
// it to tell which packages a traced `sigil-agent` process loaded). Source maps are written beside each chunk; node
// uses them with `--enable-source-maps`.
import { rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const OUT_DIR = 'dist/agent';
/** Packages that must not be inside the bundle: loaded by `require` on first use (libs/spiffe/src/lazy-modules.ts). */
const REQUIRED_ON_FIRST_USE = /(?:^|\/)node_modules\/(?:@peculiar\/x509|jose)\//;
/** The agent never loads the server's framework (issue 13: @nestjs/common alone cost it ~30 MiB). */
const SERVER_FRAMEWORK = /(?:^|\/)node_modules\/(?:@nestjs\/|typeorm\/|pg\/|@electric-sql\/)/;

await rm(join(ROOT, OUT_DIR), { recursive: true, force: true });
const { metafile } = await build({
  absWorkingDir: ROOT,
  entryPoints: ['dist/apps/agent/main.js'],
  outdir: OUT_DIR,
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  minify: true,
  // Class and function names as written: pino's error serializer logs `err.constructor.name` as the error's type.
  keepNames: true,
  sourcemap: 'linked',
  external: ['koffi', 'reflect-metadata'],
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
const misplaced = inputs.filter((input) => REQUIRED_ON_FIRST_USE.test(input) || SERVER_FRAMEWORK.test(input));
if (misplaced.length > 0) {
  console.error(`bundle-agent: these must not be inside the agent's bundle:\n  ${misplaced.join('\n  ')}`);
  process.exit(1);
}
const typescript = inputs.filter((input) => input.endsWith('.ts'));
if (typescript.length > 0) {
  console.error(`bundle-agent: TypeScript sources reached the bundle:\n  ${typescript.join('\n  ')}`);
  process.exit(1);
}
await writeFile(join(ROOT, OUT_DIR, 'meta.json'), JSON.stringify(metafile));
