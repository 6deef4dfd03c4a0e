#!/usr/bin/env node
// Entry point for `sigil-agent`; the compiled app lives in dist/ (built by `npm ci` through `prepare`).
import '../dist/apps/agent/main.js';
