import { createServiceLogger, type LogOutput } from '@sigil/logging';
import { type DestinationStream, type LevelWithSilent, type Logger } from 'pino';

export { PinoLoggerService, type LogOutput } from '@sigil/logging';

/** The sigil-server root logger: secrets redacted. `destination` lets tests capture the lines. */
export function createRootLogger(
  level: LevelWithSilent,
  destination?: DestinationStream,
  output: LogOutput = {},
): Logger {
  return createServiceLogger('sigil-server', level, destination, output);
}
