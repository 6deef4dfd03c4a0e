import { createRequire } from 'node:module';
import { webcrypto } from 'node:crypto';

/**
 * Synchronous, on-first-use loading of the heavy dependencies, so that a process that needs only part of this library
 * (a CLI fetching an X.509-SVID, say) does not pay for loading the rest: jose alone costs ~60–180 ms of start-up.
 * `require` of an ES module (jose) is part of every Node version in `engines` (20.19+, 22.13+); a module loaded here
 * is the same instance a static `import` of it would get.
 */
const requireModule = createRequire(import.meta.url);

/**
 * The packages loaded here with `require`. A bundle that includes this module must leave each of them outside it (in
 * node_modules, where `require` finds them), or a process would hold two instances of one package: the agent's build
 * (scripts/bundle-agent.mjs) reads this list and fails when one of them gets in.
 */
export const LOADED_ON_FIRST_USE = {
  jose: 'jose',
  x509: '@peculiar/x509',
  reflectMetadata: 'reflect-metadata',
} as const;

let jose: typeof import('jose') | undefined;

/** jose, loaded on the first call (JWT-SVID signing, decoding and validation). */
export function loadJose(): typeof import('jose') {
  jose ??= requireModule(LOADED_ON_FIRST_USE.jose) as typeof import('jose');
  return jose;
}

let x509: typeof import('@peculiar/x509') | undefined;

/**
 * @peculiar/x509 (~0.4 s to load with reflect-metadata, tsyringe and its ASN.1 schemas), loaded on the first call and
 * set up once: reflect-metadata first (it reads decorator metadata as it loads), Node's WebCrypto as its provider
 * (it only parses and encodes ASN.1; Node checks every signature). Verification does not need it; it is loaded when a
 * caller asks for parsed certificate objects (`X509Svid.certificates`, `TrustBundle.x509Authorities`) or passes one.
 */
export function loadX509(): typeof import('@peculiar/x509') {
  if (x509 === undefined) {
    requireModule(LOADED_ON_FIRST_USE.reflectMetadata);
    const loaded = requireModule(LOADED_ON_FIRST_USE.x509) as typeof import('@peculiar/x509');
    loaded.cryptoProvider.set(webcrypto as unknown as Parameters<typeof loaded.cryptoProvider.set>[0]);
    x509 = loaded;
  }
  return x509;
}
