import { runAgentCli } from './cli.js';

await runAgentCli(process.argv);
