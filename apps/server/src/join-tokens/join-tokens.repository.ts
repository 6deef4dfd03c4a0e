import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { LessThanOrEqual, type Repository } from 'typeorm';
import { JoinTokenEntity } from './join-token.entity.js';

@Injectable()
export class JoinTokensRepository {
  constructor(@InjectRepository(JoinTokenEntity) private readonly repository: Repository<JoinTokenEntity>) {}

  async insert(tokenHash: string, spiffeId: string | null, createdAt: Date, expiresAt: Date): Promise<JoinTokenEntity> {
    const entity = this.repository.create({ tokenHash, spiffeId, createdAt, expiresAt });
    await this.repository.insert(entity);
    return entity;
  }

  /**
   * Deletes the unexpired token with this hash and returns it, in one statement: of two concurrent attestations
   * with the same token, exactly one gets the row.
   */
  async takeUnexpired(tokenHash: string, now: Date): Promise<Pick<JoinTokenEntity, 'id' | 'spiffeId'> | undefined> {
    const result = await this.repository
      .createQueryBuilder()
      .delete()
      .where('token_hash = :tokenHash AND expires_at > :now', { tokenHash, now })
      .returning('id, spiffe_id')
      .execute();
    const row = (result.raw as { id: string; spiffe_id: string | null }[])[0];
    return row && { id: row.id, spiffeId: row.spiffe_id };
  }

  async deleteExpired(now: Date): Promise<number> {
    const result = await this.repository.delete({ expiresAt: LessThanOrEqual(now) });
    return result.affected ?? 0;
  }
}
