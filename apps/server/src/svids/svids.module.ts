import { Module } from '@nestjs/common';
import { CaModule } from '../ca/ca.module.js';
import { JwtSvidsController, X509SvidsController } from './mint.controller.js';
import { MintService } from './mint.service.js';

/** Minting SVIDs through the admin API (SPIRE's `x509 mint` and `jwt mint`), signed by the CA module's keys. */
@Module({
  imports: [CaModule],
  controllers: [X509SvidsController, JwtSvidsController],
  providers: [MintService],
})
export class SvidsModule {}
