import { Logger, Module } from '@nestjs/common';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { KeyEncryptionKey } from './key-encryption-key.js';

/** Provides the {@link KeyEncryptionKey} that seals CA private keys in the database. */
@Module({
  providers: [
    {
      provide: KeyEncryptionKey,
      inject: [SERVER_CONFIG],
      useFactory: async (config: ServerConfig): Promise<KeyEncryptionKey> => {
        const kek = await KeyEncryptionKey.load({
          kekBase64: config.kek,
          kekFile: config.kekFile,
          dataDir: config.dataDir,
        });
        // Only where the key came from is logged, never the key.
        new Logger('KeyEncryptionKey').log({ msg: 'key-encryption key loaded', kekSource: kek.source });
        return kek;
      },
    },
  ],
  exports: [KeyEncryptionKey],
})
export class KekModule {}
