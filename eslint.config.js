import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

// Architecture boundaries, enforced on every import (README, "Repository layout"): libs never import apps or test/,
// libs/spiffe imports nothing of ours (it stays pure SPIFFE), the two apps never import each other, and no production
// file imports test/. Each file gets one combined list: in a flat config a later block replaces an earlier block's
// options for the same rule, it does not add to them.
const TESTS = ['**/*.spec.ts', '**/*.int-spec.ts', '**/*.e2e-spec.ts'];
const NO_APPS = { group: ['**/apps/**'], message: 'libs never import apps: move the shared rule into a lib' };
const NO_TEST = {
  group: ['**/test/**'],
  message: 'production code never imports test/; specs of libs live in test/libs',
};
const NO_OURS = { group: ['@sigil/*'], message: 'libs/spiffe is pure SPIFFE: it imports nothing of ours' };
const NO_FRAMEWORK = {
  group: ['@nestjs/*', 'class-validator', 'class-transformer'],
  message: 'libs/agent-api loads no framework: the agent imports it, and must not load Nest',
};
const noApp = (app) => ({
  group: [`**/apps/${app}/**`, `**/${app}/src/**`],
  message: `the apps never import each other: move what both need into a lib`,
});
// In the server, controller → service → repository → entity: only repositories, entities, modules (which register
// entities) and the database layer see TypeORM or an entity class; services get plain domain types. The change
// notifier is database plumbing too (LISTEN/NOTIFY on a connection of its own).
const NO_ORM = {
  group: ['typeorm', 'typeorm/*', '@nestjs/typeorm'],
  message: 'services talk to repositories: TypeORM stays in *.repository.ts, *.entity.ts, *.module.ts and database/',
};
const NO_ENTITY = {
  group: ['**/*.entity.js', './*.entity.js'],
  message: 'entity classes stay in the repository layer: use the domain type the repository returns',
};
const SERVER_ORM_LAYER = [
  ...TESTS,
  'apps/server/src/**/*.repository.ts',
  'apps/server/src/**/*.entity.ts',
  'apps/server/src/**/*.module.ts',
  'apps/server/src/database/**',
  'apps/server/src/entries/entry-change-notifier.ts',
];
const boundaries = (files, patterns, ignores = []) => ({
  files,
  ignores,
  rules: { 'no-restricted-imports': ['error', { patterns }] },
});

export default tseslint.config(
  { ignores: ['**/dist/**', 'node_modules/**', 'coverage/**', '.sigil/**', 'libs/workload-api/src/gen/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: { ...globals.node },
      // Nest injects constructor parameters by their emitted decorator metadata: those imports are runtime uses.
      parserOptions: { emitDecoratorMetadata: true, experimentalDecorators: true },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': [
        'error',
        { fixStyle: 'inline-type-imports', disallowTypeAnnotations: false },
      ],
      'no-console': 'off',
    },
  },
  boundaries(['libs/**/*.ts'], [NO_APPS, NO_TEST], ['libs/spiffe/**']),
  boundaries(['libs/spiffe/**/*.ts'], [NO_APPS, NO_TEST, NO_OURS]),
  boundaries(['libs/agent-api/**/*.ts'], [NO_APPS, NO_TEST, NO_FRAMEWORK]),
  boundaries(['apps/server/**/*.ts'], [noApp('agent'), NO_TEST], TESTS),
  boundaries(['apps/server/src/**/*.ts'], [noApp('agent'), NO_TEST, NO_ORM, NO_ENTITY], SERVER_ORM_LAYER),
  boundaries(
    TESTS.map((glob) => `apps/server/${glob}`),
    [noApp('agent')],
  ),
  boundaries(['apps/agent/**/*.ts'], [noApp('server'), NO_TEST], TESTS),
  boundaries(
    TESTS.map((glob) => `apps/agent/${glob}`),
    [noApp('server')],
  ),
  {
    // A focused test silently skips the rest of the suite (vitest.config.ts also sets allowOnly: false).
    files: ['**/*.{spec,int-spec,e2e-spec}.ts', 'test/**/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: "MemberExpression[property.name='only']",
          message: '.only focuses on some tests and skips the others: remove it before committing',
        },
      ],
    },
  },
);
