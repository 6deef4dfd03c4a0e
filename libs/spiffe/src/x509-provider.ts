// @peculiar/x509 reads decorator metadata when it loads, so reflect-metadata must be imported first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';

// Node's WebCrypto does every signature check; @peculiar/x509 only parses and encodes ASN.1.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
