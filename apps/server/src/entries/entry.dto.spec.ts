import 'reflect-metadata';
import { Body, Controller, Module, Param, Patch, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { describe, expect, it } from 'vitest';
import { AppError } from '../common/errors.js';
import { createValidationPipe } from '../common/validation.js';
import { CreateEntryDto, UpdateEntryDto, toEntryInput } from './entry.dto.js';

const pipe = createValidationPipe();

async function validate(metatype: typeof CreateEntryDto | typeof UpdateEntryDto, body: unknown): Promise<string> {
  try {
    await pipe.transform(body, { type: 'body', metatype });
    return 'ok';
  } catch (error) {
    if (error instanceof AppError) return error.message;
    throw error;
  }
}

// The update body takes the create body's fields, every one optional: the same shape rules, none required.
describe('UpdateEntryDto', () => {
  it.each([
    [{}, 'ok'],
    [{ hint: 'payments', x509_svid_ttl: 900 }, 'ok'],
    [{ expires_at: null }, 'ok'],
    [{ expires_at: '2030-01-01T00:00:00Z' }, 'ok'],
    [{ selectors: [{ type: 'unix', value: 'uid:0' }] }, 'ok'],
    [{ spiffe_id: 7 }, 'spiffe_id: must be a string'],
    [{ parent_id: [] }, 'parent_id: must be a string'],
    [
      { selectors: 'unix:uid:0' },
      'selectors: each value must be an object; selectors: must contain no more than 64 elements; selectors: must be an array; selectors: each value nested property selectors must be either object or array',
    ],
    [{ selectors: [[{ type: 'unix', value: 'uid:0' }]] }, 'selectors: each value must be an object'],
    [{ selectors: [{ type: 'unix' }] }, 'selectors.0.value: must be a string'],
    [
      { selectors: Array.from({ length: 65 }, (_, i) => ({ type: 'unix', value: `uid:${i}` })) },
      'selectors: must contain no more than 64 elements',
    ],
    [{ x509_svid_ttl: 1.5 }, 'x509_svid_ttl: must be an integer number'],
    [{ jwt_svid_ttl: '60' }, 'jwt_svid_ttl: must be an integer number'],
    [{ dns_names: ['a', 1] }, 'dns_names: each value must be a string'],
    [
      { federates_with: 'x.org' },
      'federates_with: must contain no more than 32 elements; federates_with: must be an array',
    ],
    [{ admin: 'yes' }, 'admin: must be a boolean value'],
    [{ downstream: 1 }, 'downstream: must be a boolean value'],
    [{ hint: 3 }, 'hint: must be a string'],
    [{ expires_at: '2030-01-01 00:00:00' }, 'expires_at: must be a valid ISO 8601 date string'],
    [{ id: 'x' }, 'id: unknown field'],
  ])('%j: %s', async (body, expected) => {
    expect(await validate(UpdateEntryDto, body)).toBe(expected);
  });

  it('maps only the fields present, and keeps expires_at: null (removes the expiry)', async () => {
    const dto = (await pipe.transform(
      { hint: 'x', expires_at: null },
      { type: 'body', metatype: UpdateEntryDto },
    )) as UpdateEntryDto;
    expect(toEntryInput(dto)).toEqual({ hint: 'x', expiresAt: null });
  });

  it('leaves the selectors of an update whose selectors are null as they are, like absent ones', async () => {
    const dto = (await pipe.transform(
      { selectors: null, hint: 'x' },
      { type: 'body', metatype: UpdateEntryDto },
    )) as UpdateEntryDto;
    expect(toEntryInput(dto)).toEqual({ hint: 'x' });
  });

  it('requires on create what update leaves optional', async () => {
    expect(await validate(CreateEntryDto, {})).toBe(
      'spiffe_id: must be a string; parent_id: must be a string; selectors: each value must be an object; selectors: must contain no more than 64 elements; selectors: must be an array',
    );
  });

  it('documents the update body with every field optional, and every field of create but the id', async () => {
    @Controller('v1/entries')
    class DocumentedController {
      @Post()
      create(@Body() _body: CreateEntryDto): void {}

      @Patch(':id')
      update(@Param('id') _id: string, @Body() _body: UpdateEntryDto): void {}
    }
    @Module({ controllers: [DocumentedController] })
    class DocumentedModule {}
    const app = await NestFactory.create(DocumentedModule, new FastifyAdapter(), { logger: false });
    try {
      const schemas = SwaggerModule.createDocument(app, new DocumentBuilder().build()).components!.schemas!;
      const update = schemas['UpdateEntryDto'] as { required?: string[]; properties: Record<string, object> };
      const create = schemas['CreateEntryDto'] as { required?: string[]; properties: Record<string, object> };
      expect(update.required ?? []).toEqual([]);
      // The id is chosen at create (`entry create --entry-id`) and never changed.
      expect(Object.keys(update.properties).sort()).toEqual(
        Object.keys(create.properties)
          .filter((name) => name !== 'id')
          .sort(),
      );
    } finally {
      await app.close();
    }
  });
});
