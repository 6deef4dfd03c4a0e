#!/usr/bin/env node
// Entry point for `sigil-server`; the compiled app lives in dist/ (built by `npm ci` through `prepare`).
import '../dist/apps/server/main.js';
