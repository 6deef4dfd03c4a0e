// @peculiar/x509 reads decorator metadata when it loads, so reflect-metadata must be imported first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { loadX509 } from './lazy-modules.js';

// The one setup (Node's WebCrypto as the provider) is loadX509's; the static import above is the same module instance.
loadX509();

export { x509 };

/** The one rule of which authorities issued a chain (lean DER reader), here for the callers that import it from here. */
export { chainIssuerIds } from './certificate.js';
