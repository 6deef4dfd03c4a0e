import { createJsonLogger, type LogFormat } from '@sigil/logging';
import { type DestinationStream, type LevelWithSilent, type Logger } from 'pino';

export { PinoLoggerService } from '@sigil/logging';

/** Where and how log lines go: `--log-format` (default json) and `--log-file` (default stdout). */
export interface LogOutput {
  readonly logFormat?: LogFormat;
  readonly logFile?: string;
}

/** The sigil-server root logger: secrets redacted. `destination` lets tests capture the lines. */
export function createRootLogger(
  level: LevelWithSilent,
  destination?: DestinationStream,
  output: LogOutput = {},
): Logger {
  return createJsonLogger({
    service: 'sigil-server',
    level,
    ...(output.logFormat && { format: output.logFormat }),
    ...(output.logFile !== undefined && { file: output.logFile }),
    ...(destination && { destination }),
  });
}
