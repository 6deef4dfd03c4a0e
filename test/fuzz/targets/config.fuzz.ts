import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRootCa, generateKeyPair } from '@sigil/pki';
import { TrustBundle, TrustDomain } from '@sigil/spiffe';
import fc from 'fast-check';
import { AgentConfigError, loadAgentConfig } from '../../../apps/agent/src/config.js';
import { ConfigError, loadServerConfig } from '../../../apps/server/src/config.js';
import { anyString, jsonText, mutatedJson, mutatedText } from '../arbitraries.js';
import { Outcomes, runTarget, tryParse, type FuzzReport } from '../harness.js';

const AGENT_CONFIGS = [
  {
    server_address: 'sigil.example.org:8081',
    join_token: 'abc123',
    trust_bundle_file: 'bundle.pem',
    socket_path: '/tmp/sigil-fuzz/api.sock',
    data_dir: 'data',
    log_level: 'debug',
  },
  { server_address: ['a:1', 'b:2'], insecure_bootstrap: true, trust_domain: 'example.org' },
  { server_address: 'a:1,[::1]:2', trust_bundle_file: 'bundle.json', trust_domain: 'example.org' },
];
const SERVER_CONFIGS = [
  {
    trust_domain: 'example.org',
    data_dir: 'data',
    bind_address: '127.0.0.1',
    port: 8081,
    database_url: 'postgres://u:p@localhost/db',
    admin_socket: '/tmp/sigil-fuzz/admin.sock',
    ca_key_type: 'ec-p384',
    ca_ttl: '48h',
    x509_svid_ttl: '1h',
    jwt_svid_ttl: 300,
    join_token_ttl: '10m',
    log_level: 'warn',
    agent_sign_rate: '10',
    agent_sign_burst: 600,
    agent_jwt_sign_rate: 5,
    agent_jwt_sign_burst: '50',
    agent_sign_max_in_flight: 2,
  },
  { upstream_ca_cert_file: 'ca.pem', upstream_ca_key_file: 'ca.key', kek_file: 'kek', x509pop_ca_bundle: 'pop.pem' },
];

const isAgentConfigError = (error: unknown): boolean => error instanceof AgentConfigError;
const isServerConfigError = (error: unknown): boolean => error instanceof ConfigError;

/**
 * Config files of both apps: `loadAgentConfig` and `loadServerConfig` reading a file of arbitrary contents (valid
 * configs of either app with keys of the wrong type, removed or nested up to 100,000 levels, cut JSON, random text),
 * and the agent's trust bundle file it names (mutated PEM and SPIFFE JSON). Only `AgentConfigError` and
 * `ConfigError` may be thrown.
 */
export async function fuzzConfig(runs: number): Promise<FuzzReport> {
  const dir = mkdtempSync(join(tmpdir(), 'sigil-fuzz-config-'));
  try {
    const td = TrustDomain.parse('example.org');
    const ca = await createRootCa({ trustDomain: td, keys: await generateKeyPair('ec-p256'), now: new Date() });
    const bundle = TrustBundle.create(td, { x509Authorities: [ca.der], sequenceNumber: 1 });
    const configText = jsonText(mutatedJson([...AGENT_CONFIGS, ...SERVER_CONFIGS], 3));
    const bundleText = fc.oneof(
      mutatedText([bundle.x509Pem(), bundle.toJson()], 2),
      jsonText(mutatedJson([bundle.toJwks()], 2)),
      anyString,
    );
    const configFile = join(dir, 'config.json');
    const outcomes = new Outcomes();
    return await runTarget(
      'config',
      fc.tuple(configText, bundleText),
      async ([config, bundleFile]) => {
        writeFileSync(configFile, config);
        writeFileSync(join(dir, 'bundle.pem'), bundleFile);
        writeFileSync(join(dir, 'bundle.json'), bundleFile);
        const agent = await tryParse('loadAgentConfig', isAgentConfigError, () =>
          loadAgentConfig({ file: configFile, env: {}, flags: {}, cwd: dir }),
        );
        const server = await tryParse('loadServerConfig', isServerConfigError, () =>
          loadServerConfig({ file: configFile, env: {}, flags: {}, cwd: dir }),
        );
        outcomes.add(`agent ${agent ? 'loaded' : 'refused'}, server ${server ? 'loaded' : 'refused'}`);
      },
      runs,
      outcomes,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
