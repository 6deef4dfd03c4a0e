export {
  UnsafeSocketDirectoryError,
  checkSocketDirectory,
  prepareSocketDirectory,
  type SocketDirectoryOptions,
} from './socket-directory.js';
export { nullConfigValueProblem, parseCount, parseDurationSeconds, showConfigValue } from './config-value.js';
export { TokenBucketRateLimiter, type RateLimit } from './token-bucket.js';
