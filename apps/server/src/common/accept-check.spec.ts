import 'reflect-metadata';
import { Exclude, Transform, Type } from 'class-transformer';
import { IsInt, IsOptional, IsString, MaxLength, ValidateIf, ValidateNested } from 'class-validator';
import { describe, expect, it } from 'vitest';
import {
  BatchCreateEntriesDto,
  CreateEntryDto,
  ListEntriesQueryDto,
  UpdateEntryDto,
  toEntryInput,
} from '../entries/entry.dto.js';
import { acceptCheckOf } from './accept-check.js';
import { createValidationPipe } from './validation.js';

const pipe = createValidationPipe();
const valid = {
  spiffe_id: 'spiffe://example.org/web',
  parent_id: 'spiffe://example.org/sigil/agent/join_token/1',
  selectors: [{ type: 'unix', value: 'uid:0' }],
};

// The fast path answers true only where the full pipe accepts; everything else goes through the pipe, whose
// messages entry.dto.spec.ts checks through the same createValidationPipe.
describe('acceptCheckOf', () => {
  it('mirrors the batch create body (the hot path), its entries and the update body', () => {
    expect(acceptCheckOf(BatchCreateEntriesDto)).toBeDefined();
    expect(acceptCheckOf(CreateEntryDto)).toBeDefined();
    expect(acceptCheckOf(UpdateEntryDto)).toBeDefined();
  });

  it('leaves classes with value conversions to the pipe', () => {
    // @Type(() => Number) and @Transform on query fields change the values the pipe hands on.
    expect(acceptCheckOf(ListEntriesQueryDto)).toBeUndefined();
    class WithDefault {
      @IsOptional()
      @IsInt()
      size = 10;
    }
    expect(acceptCheckOf(WithDefault)).toBeUndefined();
    class Inner {
      @IsString() name!: string;
    }
    class NestedWithoutType {
      @ValidateNested() inner!: Inner;
    }
    expect(acceptCheckOf(NestedWithoutType)).toBeUndefined();
    class NestedWithType {
      @ValidateNested() @Type(() => Inner) inner!: Inner;
    }
    expect(acceptCheckOf(NestedWithType)?.({ inner: { name: 'x' } })).toBe(true);
  });

  it.each([
    ['a full entry', { ...valid, id: 'x', x509_svid_ttl: 60, jwt_svid_ttl: 0, dns_names: ['a'], federates_with: [] }],
    ['optional fields null', { ...valid, hint: null, expires_at: null, admin: undefined }],
    ['an expiry', { ...valid, expires_at: '2030-01-01T00:00:00Z' }],
  ])('accepts %s, handing on what the pipe would', async (_, entry) => {
    const body = { entries: [entry, entry] };
    expect(acceptCheckOf(BatchCreateEntriesDto)!(body)).toBe(true);
    const full = (await pipe.transform(structuredClone(body), {
      type: 'query', // not 'body': the fast path is off, the pipe runs in full
      metatype: BatchCreateEntriesDto,
    })) as BatchCreateEntriesDto;
    const fast = (await pipe.transform(body, {
      type: 'body',
      metatype: BatchCreateEntriesDto,
    })) as BatchCreateEntriesDto;
    expect(fast).toBe(body);
    expect(fast.entries.map((dto) => toEntryInput(dto))).toEqual(full.entries.map((dto) => toEntryInput(dto)));
  });

  it.each([
    ['no entries field', {}],
    ['entries not a list', { entries: valid }],
    ['a list inside the list', { entries: [[valid]] }],
    ['an unknown field', { entries: [{ ...valid, extra: 1 }] }],
    ['an unknown top-level field', { entries: [valid], more: [] }],
    ['an unknown selector field', { entries: [{ ...valid, selectors: [{ type: 'unix', value: 'uid:0', x: 1 }] }] }],
    ['a selector not an object', { entries: [{ ...valid, selectors: ['unix:uid:0'] }] }],
    ['a selector value not a string', { entries: [{ ...valid, selectors: [{ type: 'unix', value: 0 }] }] }],
    ['a missing parent', { entries: [{ spiffe_id: valid.spiffe_id, selectors: valid.selectors }] }],
    ['a non-integer TTL', { entries: [{ ...valid, x509_svid_ttl: 1.5 }] }],
    ['a DNS name not a string', { entries: [{ ...valid, dns_names: ['a', 1] }] }],
    ['too many trust domains', { entries: [{ ...valid, federates_with: Array.from({ length: 33 }, () => 'a') }] }],
    ['a boolean as a string', { entries: [{ ...valid, admin: 'yes' }] }],
    ['an expiry with a space', { entries: [{ ...valid, expires_at: '2030-01-01 00:00:00' }] }],
    ['no entries', { entries: [] }],
    ['a class instance', Object.assign(Object.create({ inherited: true }) as object, { entries: [valid] })],
  ])('leaves %s to the pipe, which refuses it', async (_, body) => {
    expect(acceptCheckOf(BatchCreateEntriesDto)!(body)).toBe(false);
    if (Object.getPrototypeOf(body) !== Object.prototype) return; // not a JSON body
    await expect(pipe.transform(body, { type: 'body', metatype: BatchCreateEntriesDto })).rejects.toThrow();
  });

  // Review R14: what the full pipe does differently for these classes is not mirrored; they are left to it.
  it('leaves to the pipe a transform of any direction, class-level exclusion, unvalidated fields and methods', async () => {
    class ToClassOnly {
      @Transform(({ value }: { value: string }) => `spiffe://example.org/${value}`, { toClassOnly: true })
      @IsString()
      @MaxLength(24)
      name!: string;
    }
    class Excluded {
      @IsString() name!: string;
    }
    Exclude()(Excluded);
    class Unvalidated {
      @IsString() name!: string;
      internal: unknown;
    }
    class WithMethod {
      @ValidateIf((object: WithMethod) => object.renewal())
      @IsString()
      name!: string;
      renewal(): boolean {
        return true;
      }
    }
    for (const target of [ToClassOnly, Excluded, Unvalidated, WithMethod]) {
      expect({ target: target.name, check: acceptCheckOf(target) }).toEqual({ target: target.name, check: undefined });
    }
    await expect(pipe.transform({ name: 'abcdefghij' }, { type: 'body', metatype: ToClassOnly })).rejects.toThrow();
  });

  it('refuses a body whose missing field reads through a polluted Object.prototype', () => {
    const polluted = Object.prototype as Record<string, unknown>;
    polluted['admin'] = true;
    try {
      expect(acceptCheckOf(CreateEntryDto)!(valid)).toBe(false);
    } finally {
      delete polluted['admin'];
    }
    expect(acceptCheckOf(CreateEntryDto)!(valid)).toBe(true);
  });
});
