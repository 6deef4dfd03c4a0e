import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { QueryFailedError, type Repository } from 'typeorm';
import { AdminTokenEntity } from './admin-token.entity.js';

/** A stored admin token: its name, the hash of its secret (never the secret) and its times. */
export interface StoredAdminToken {
  readonly id: string;
  readonly name: string;
  readonly tokenHash: string;
  readonly createdAt: Date;
  readonly expiresAt: Date | null;
  readonly lastUsedAt: Date | null;
}

@Injectable()
export class AdminTokensRepository {
  constructor(@InjectRepository(AdminTokenEntity) private readonly repository: Repository<AdminTokenEntity>) {}

  /** Stores a new token; false when the name is already taken (a concurrent create lost on the unique name). */
  async insert(name: string, tokenHash: string, createdAt: Date, expiresAt: Date | null): Promise<boolean> {
    const entity = this.repository.create({ name, tokenHash, createdAt, expiresAt, lastUsedAt: null });
    try {
      await this.repository.insert(entity);
      return true;
    } catch (error) {
      if (error instanceof QueryFailedError && (error.driverError as { code?: string }).code === '23505') return false;
      throw error;
    }
  }

  existsByName(name: string): Promise<boolean> {
    return this.repository.existsBy({ name });
  }

  findByHash(tokenHash: string): Promise<StoredAdminToken | null> {
    return this.repository.findOneBy({ tokenHash });
  }

  listAll(): Promise<StoredAdminToken[]> {
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
