import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const eslint = new ESLint({ cwd: root });

/** The `no-restricted-imports` messages ESLint gives `source` as if it were the file `path` of the repository. */
async function restrictedImports(path: string, source: string): Promise<string[]> {
  const [result] = await eslint.lintText(source, { filePath: `${root}/${path}` });
  return result!.messages.filter((message) => message.ruleId === 'no-restricted-imports').map((m) => m.message);
}

describe('architecture boundaries (eslint no-restricted-imports, run by npm run lint)', () => {
  it.each([
    ['libs/pki/src/planted.ts', "import '../../../apps/agent/src/agent.js';", /libs never import apps/],
    ['libs/runtime/src/planted.ts', "import '../../../test/support/fake-clock.js';", /never imports test/],
    ['libs/spiffe/src/planted.ts', "import '@sigil/pki';", /libs\/spiffe is pure SPIFFE/],
    ['libs/spiffe/src/planted.spec.ts', "import '../../../apps/server/src/config.js';", /libs never import apps/],
    ['libs/agent-api/src/planted.ts', "import { Injectable } from '@nestjs/common';", /loads no framework/],
    ['libs/agent-api/src/planted.ts', "import '../../../apps/server/src/config.js';", /libs never import apps/],
    ['apps/server/src/planted.ts', "import '../../agent/src/agent.js';", /apps never import each other/],
    ['apps/server/src/planted.spec.ts', "import '../../../apps/agent/src/agent.js';", /apps never import each other/],
    ['apps/agent/src/planted.ts', "import '../../../apps/server/src/config.js';", /apps never import each other/],
    ['apps/agent/src/cli/planted.ts', "import '../../../../test/support/fake-clock.js';", /never imports test/],
    ['apps/server/src/entries/planted.service.ts', "import { EntityManager } from 'typeorm';", /talk to repositories/],
    ['apps/server/src/health/planted.service.ts', "import { InjectDataSource } from '@nestjs/typeorm';", /TypeORM/],
    ['apps/server/src/agents/planted.service.ts', "import type { AgentEntity } from './agent.entity.js';", /entity/],
    ['apps/server/src/ca/planted.ts', "import type { CaKeyEntity } from '../ca/ca-key.entity.js';", /entity classes/],
  ])('refuses %s importing across a boundary', async (path, source, message) => {
    const messages = await restrictedImports(path, source);
    expect(messages).toHaveLength(1);
    expect(messages[0]).toMatch(message);
  });

  it.each([
    ['libs/pki/src/planted.ts', "import '@sigil/spiffe';"],
    ['apps/agent/src/planted.ts', "import '@sigil/runtime';"],
    ['apps/server/src/planted.spec.ts', "import '../../../test/support/fake-clock.js';"],
    ['test/libs/pki/planted.spec.ts', "import '../../../libs/pki/src/der.js';"],
    ['apps/server/src/entries/planted.repository.ts', "import { EntityManager } from 'typeorm';"],
    ['apps/server/src/agents/planted.repository.ts', "import { AgentEntity } from './agent.entity.js';"],
    ['apps/server/src/agents/planted.module.ts', "import { AgentEntity } from './agent.entity.js';"],
    ['apps/server/src/database/planted.ts', "import { DataSource } from 'typeorm';"],
    ['apps/server/src/agents/planted.int-spec.ts', "import { AgentEntity } from './agent.entity.js';"],
  ])('lets %s import what it may', async (path, source) => {
    expect(await restrictedImports(path, source)).toEqual([]);
  });
});
