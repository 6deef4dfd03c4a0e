import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { type Repository } from 'typeorm';
import { AdminTokenEntity } from './admin-token.entity.js';

@Injectable()
export class AdminTokensRepository {
  constructor(@InjectRepository(AdminTokenEntity) private readonly repository: Repository<AdminTokenEntity>) {}

  async insert(name: string, tokenHash: string, createdAt: Date, expiresAt: Date | null): Promise<AdminTokenEntity> {
    const entity = this.repository.create({ name, tokenHash, createdAt, expiresAt, lastUsedAt: null });
    await this.repository.insert(entity);
    return entity;
  }

  existsByName(name: string): Promise<boolean> {
    return this.repository.existsBy({ name });
  }

  findByHash(tokenHash: string): Promise<AdminTokenEntity | null> {
    return this.repository.findOneBy({ tokenHash });
  }

  listAll(): Promise<AdminTokenEntity[]> {
    return this.repository.find({ order: { name: 'ASC' } });
  }

  async deleteByName(name: string): Promise<boolean> {
    const result = await this.repository.delete({ name });
    return (result.affected ?? 0) > 0;
  }

  async markUsed(id: string, at: Date): Promise<void> {
    await this.repository.update({ id }, { lastUsedAt: at });
  }
}
