export * from './common.js';
export * from './join-token.js';
export * from './x509pop.js';
