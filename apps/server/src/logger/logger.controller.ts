import { Body, Controller, Delete, Get, Put } from '@nestjs/common';
import { ApiOkResponse, ApiProperty, ApiTags } from '@nestjs/swagger';
import { IsString } from 'class-validator';
import { LOG_LEVELS, toLoggerLevelsBody, type LogLevel } from '@sigil/logging';
import { LogLevelService, type LogLevels } from './log-level.service.js';

export class SetLogLevelRequest {
  @ApiProperty({ enum: LOG_LEVELS })
  @IsString()
  level!: string;
}

export class LoggerResponse {
  @ApiProperty({ enum: LOG_LEVELS }) current_level!: LogLevel;
  @ApiProperty({ enum: LOG_LEVELS, description: 'the configured level, which a restart or reset comes back to' })
  launch_level!: LogLevel;
}

const toResponse = (levels: LogLevels): LoggerResponse => toLoggerLevelsBody(levels);

/** `/v1/logger`: the server's log level, changed in memory only (SPIRE's logger API). */
@ApiTags('logger')
@Controller('v1/logger')
export class LoggerController {
  constructor(private readonly levels: LogLevelService) {}

  @Get()
  @ApiOkResponse({ type: LoggerResponse })
  get(): LoggerResponse {
    return toResponse(this.levels.get());
  }

  @Put()
  @ApiOkResponse({ type: LoggerResponse })
  set(@Body() body: SetLogLevelRequest): LoggerResponse {
    return toResponse(this.levels.set(body.level));
  }

  @Delete()
  @ApiOkResponse({ type: LoggerResponse })
  reset(): LoggerResponse {
    return toResponse(this.levels.reset());
  }
}
