export {
  UnsafeSocketDirectoryError,
  checkSocketDirectory,
  prepareSocketDirectory,
  type SocketDirectoryOptions,
} from './socket-directory.js';
export { showConfigValue } from './config-value.js';
