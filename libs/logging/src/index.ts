export {
  ContextLogger,
  createJsonLogger,
  createServiceLogger,
  formatTextLine,
  LOG_FORMATS,
  LOG_LEVELS,
  PinoLoggerService,
  REDACTED_FIELDS,
  type JsonLoggerOptions,
  type LogFormat,
  type LogLevel,
  type LogOutput,
} from './logging.js';
export {
  LOG_INTERVAL_MS,
  LOG_LINES_PER_INTERVAL,
  LOG_MAX_KEYS,
  LOG_PATH_MAX_LENGTH,
  LOG_TEXT_MAX_LENGTH,
  logPath,
  RateLimitedLog,
  truncateForLog,
  type LogFields,
  type RateLimitedLogOptions,
} from './rate-limited-log.js';
export {
  LogLevelControl,
  LogLevelError,
  toLoggerLevelsBody,
  type LoggerLevelsBody,
  type LogLevels,
} from './log-level-control.js';
