import { limitHeapGrowth } from './heap-growth.js';

// Before any other module loads: loading the agent's module graph is the first burst that would grow V8's young
// generation to its largest size (see AGENT_SEMI_SPACE_GROWTH_FACTOR), so the flags must be set before it.
limitHeapGrowth();
const { runAgentCli } = await import('./cli.js');
await runAgentCli(process.argv);
