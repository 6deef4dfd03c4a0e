import { type DynamicModule, Global, Module } from '@nestjs/common';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { CLOCK, type Clock } from './clock.js';

/** Provides the validated {@link ServerConfig} and the {@link Clock} to every module. */
@Global()
@Module({})
export class CoreModule {
  static forRoot(config: ServerConfig, clock: Clock): DynamicModule {
    return {
      module: CoreModule,
      providers: [
        { provide: SERVER_CONFIG, useValue: config },
        { provide: CLOCK, useValue: clock },
      ],
      exports: [SERVER_CONFIG, CLOCK],
    };
  }
}
