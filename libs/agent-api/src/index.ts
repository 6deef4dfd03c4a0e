export { MAX_CSR_BATCH } from './limits.js';
