import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    tsconfigPaths: true,
    alias: [
      // Node resolves `#migrations/*` to the compiled dist/migrations (package.json "imports"); tests use the sources.
      { find: /^#migrations\/(.*)$/, replacement: fileURLToPath(new URL('./migrations/$1.ts', import.meta.url)) },
      // Lib sources import each other as `@sigil/<lib>`; resolve that to the sources everywhere, as the root tsconfig
      // paths do, not to the package's dist (each lib's own tsconfig has no paths).
      { find: /^@sigil\/([a-z-]+)$/, replacement: fileURLToPath(new URL('./libs/$1/src/index.ts', import.meta.url)) },
    ],
  },
  test: {
    include: ['{apps,libs,test}/**/*.{spec,int-spec,e2e-spec}.ts'],
    exclude: ['**/node_modules/**', '**/dist/**'],
    globalSetup: ['test/support/global-setup.ts'],
    // `.only` fails the run instead of silently skipping every other test (vitest's default on CI only).
    allowOnly: false,
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
