import { runServerCli } from './cli.js';

await runServerCli(process.argv);
