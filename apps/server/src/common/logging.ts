import { createJsonLogger } from '@sigil/logging';
import { type DestinationStream, type LevelWithSilent, type Logger } from 'pino';

export { PinoLoggerService } from '@sigil/logging';

/** The sigil-server root logger: JSON lines on stdout, secrets redacted. `destination` lets tests capture them. */
export function createRootLogger(level: LevelWithSilent, destination?: DestinationStream): Logger {
  return createJsonLogger({ service: 'sigil-server', level, ...(destination && { destination }) });
}
