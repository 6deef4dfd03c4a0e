import { ApiPropertyOptional } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import { IsInt, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';

/** `page_size` and `page_token` of a keyset-paged listing, with the listing's own page size bounds. */
export function PageQuery(pageSize: { readonly default: number; readonly max: number }) {
  class PageQueryDto {
    @ApiPropertyOptional({ minimum: 1, maximum: pageSize.max, default: pageSize.default })
    @IsOptional()
    @Type(() => Number)
    @IsInt()
    @Min(1)
    @Max(pageSize.max)
    page_size?: number;

    @ApiPropertyOptional({ description: 'next_page_token of the previous page' })
    @IsOptional()
    @IsString()
    @MaxLength(4096)
    page_token?: string;
  }
  return PageQueryDto;
}
