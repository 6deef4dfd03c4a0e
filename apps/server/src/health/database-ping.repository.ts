import { Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';

/** The readiness probe's one query: does the database answer at all. */
@Injectable()
export class DatabasePingRepository {
  constructor(private readonly dataSource: DataSource) {}

  /** Resolves when the database answered `SELECT 1`; rejects with the driver's error otherwise. */
  async ping(): Promise<void> {
    await this.dataSource.query('SELECT 1');
  }
}
