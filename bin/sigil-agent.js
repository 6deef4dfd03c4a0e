#!/usr/bin/env node
// Entry point for `sigil-agent`: the agent compiled to dist/apps/agent and bundled into dist/agent (both by
// `npm run build`, which `npm ci` runs through `prepare`; scripts/bundle-agent.mjs says why a bundle).
import '../dist/agent/main.js';
