export * from './common.js';
export * from './join-token.js';
export * from './x509pop.js';
export * from './k8s-psat.js';
