import { buildAgentCli } from './cli.js';

await buildAgentCli().parseAsync(process.argv);
