import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { type Repository } from 'typeorm';
import { AuditRecordEntity } from './audit-record.entity.js';

@Injectable()
export class AuditRepository {
  constructor(@InjectRepository(AuditRecordEntity) private readonly repository: Repository<AuditRecordEntity>) {}

  async insert(record: Omit<AuditRecordEntity, 'id'>): Promise<void> {
    await this.repository.insert(record);
  }
}
