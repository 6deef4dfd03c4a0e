/**
 * The sigil-server <-> sigil-agent contract, written once: routes, messages (wire form, typed form, parse and
 * serialize), the limits both sides agree on and the error body. Both apps, test/support and bench import it.
 *
 * A TypeScript module rather than a protobuf service: the wire is JSON over HTTPS, agents of older releases speak
 * it, and it must not change; a proto would either change the wire or only describe it a second time. The module
 * loads no framework (the agent must not load Nest), so the server's OpenAPI classes stay in the server and
 * implement these wire types.
 */
export * from './errors.js';
export * from './limits.js';
export * from './messages.js';
export * from './routes.js';
export * from './svid-issuers.js';
export * from './attestation/index.js';
