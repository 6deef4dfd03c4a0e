export {
  UnsafeSocketDirectoryError,
  checkSocketDirectory,
  prepareSocketDirectory,
  type SocketDirectoryOptions,
} from './socket-directory.js';
export { nullConfigValueProblem, showConfigValue } from './config-value.js';
