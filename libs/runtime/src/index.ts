export {
  UnsafeSocketDirectoryError,
  checkSocketDirectory,
  prepareSocketDirectory,
  type SocketDirectoryOptions,
} from './socket-directory.js';
