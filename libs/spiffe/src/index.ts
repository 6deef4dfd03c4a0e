export { SpiffeError, type SpiffeErrorCode } from './errors.js';
export { TrustDomain } from './trust-domain.js';
export { SpiffeId } from './spiffe-id.js';
