// @peculiar/x509 needs reflect-metadata loaded before it, and a WebCrypto provider: Node's built-in one.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto);

export { x509 };
