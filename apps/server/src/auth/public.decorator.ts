import { SetMetadata } from '@nestjs/common';

export const IS_PUBLIC_KEY = 'sigil:public';

/** Marks a route (or a whole controller) as open to anyone: health, metrics, the federation bundle, docs. */
export const Public = (): MethodDecorator & ClassDecorator => SetMetadata(IS_PUBLIC_KEY, true);
