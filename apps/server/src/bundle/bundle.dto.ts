import { ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsOptional } from 'class-validator';

export type BundleFormat = 'spiffe' | 'pem';

export class BundleQuery {
  @ApiPropertyOptional({
    enum: ['spiffe', 'pem'],
    default: 'spiffe',
    description: 'spiffe: the SPIFFE bundle (JWKS) as JSON; pem: the X.509 authorities as PEM certificates',
  })
  @IsOptional()
  @IsIn(['spiffe', 'pem'], { message: 'format must be spiffe or pem' })
  format?: BundleFormat;
}
