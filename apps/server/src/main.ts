import { buildServerCli } from './cli.js';

await buildServerCli().parseAsync(process.argv);
