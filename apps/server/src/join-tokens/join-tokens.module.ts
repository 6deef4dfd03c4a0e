import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { JoinTokenEntity } from './join-token.entity.js';
import { JoinTokensController } from './join-tokens.controller.js';
import { JoinTokensRepository } from './join-tokens.repository.js';
import { JoinTokensService } from './join-tokens.service.js';

@Module({
  imports: [TypeOrmModule.forFeature([JoinTokenEntity])],
  controllers: [JoinTokensController],
  providers: [JoinTokensRepository, JoinTokensService],
  exports: [JoinTokensService],
})
export class JoinTokensModule {}
