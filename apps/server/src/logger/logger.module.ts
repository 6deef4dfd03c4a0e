import { Module } from '@nestjs/common';
import { LogLevelService } from './log-level.service.js';
import { LoggerController } from './logger.controller.js';

@Module({ controllers: [LoggerController], providers: [LogLevelService], exports: [LogLevelService] })
export class LoggerModule {}
