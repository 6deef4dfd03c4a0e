export { createJsonLogger, PinoLoggerService, REDACTED_FIELDS, type JsonLoggerOptions } from './logging.js';
