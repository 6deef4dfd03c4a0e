import { create } from '@bufbuild/protobuf';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import { SpiffeId, TrustBundle, TrustDomain } from '@sigil/spiffe';
import { NodeSchema, SPIFFECertValidatorConfigSchema, SecretSchema, type Node } from '@sigil/workload-api/envoy-sds';
import { beforeAll, describe, expect, it } from 'vitest';
import { TestCa } from '../../../../../test/support/test-ca.js';
import { type AgentBundles, type WorkloadIdentity } from '../workload-api/workload-responses.js';
import {
  SDS_DEFAULTS,
  type SdsSnapshot,
  SpiffeValidatorRequiredError,
  UnauthorizedSecretsError,
  buildSecrets,
  packSecrets,
  usesSpiffeValidator,
} from './sds-secrets.js';

const td = (name: string) => TrustDomain.parse(name);

function envoy(major: number, minor: number, metadata?: Record<string, unknown>): Node {
  return create(NodeSchema, {
    userAgentName: 'envoy',
    userAgentVersionType: {
      case: 'userAgentBuildVersion',
      value: { version: { majorNumber: major, minorNumber: minor } },
    },
    ...(metadata !== undefined && { metadata: metadata as never }),
  });
}

function pemOf(der: Uint8Array): string {
  const lines = Buffer.from(der)
    .toString('base64')
    .match(/.{1,64}/g)!;
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

describe('buildSecrets', () => {
  let snapshot: SdsSnapshot;
  let ownPem: string;
  let partnerPem: string;
  let leafPem: string;
  let keyPem: string;

  beforeAll(async () => {
    const ca = await TestCa.create('example.org');
    const partnerCa = await TestCa.create('partner.org');
    const web = await ca.createX509Svid('spiffe://example.org/web');
    const api = await ca.createX509Svid('spiffe://example.org/api');
    const identity = async (
      entryId: string,
      svid: typeof web,
      federatesWith: TrustDomain[] = [],
    ): Promise<WorkloadIdentity> => ({
      entryId,
      spiffeId: SpiffeId.parse(entryId),
      hint: '',
      federatesWith,
      x509Svid: { chain: [new Uint8Array(svid.certificate.rawData)], privateKey: await svid.privateKeyPkcs8() },
    });
    const ownDer = new Uint8Array(ca.certificate.rawData);
    const partnerDer = new Uint8Array(partnerCa.certificate.rawData);
    const bundles: AgentBundles = {
      own: TrustBundle.create(td('example.org'), { x509Authorities: [ownDer] }),
      federated: [
        TrustBundle.create(td('partner.org'), { x509Authorities: [partnerDer] }),
        TrustBundle.create(td('unrelated.org'), { x509Authorities: [partnerDer] }),
      ],
    };
    snapshot = {
      identities: [
        await identity('spiffe://example.org/web', web, [td('partner.org')]),
        await identity('spiffe://example.org/api', api),
      ],
      bundles,
    };
    ownPem = pemOf(ownDer);
    partnerPem = pemOf(partnerDer);
    leafPem = pemOf(new Uint8Array(web.certificate.rawData));
    keyPem = Buffer.from(await web.privateKeyPkcs8()).toString('base64');
  });

  const names = (resourceNames: string[], node?: Node) =>
    buildSecrets(snapshot, { resourceNames, node }, SDS_DEFAULTS).map((secret) => secret.name);

  it('answers no names with every trust domain and SPIFFE ID the caller may see, not the default names (SPIRE)', () => {
    expect(names([])).toEqual([
      'spiffe://example.org',
      'spiffe://partner.org',
      'spiffe://example.org/web',
      'spiffe://example.org/api',
    ]);
    // Empty names are no names.
    expect(names(['', ''])).toEqual(names([]));
  });

  it.each([
    [['default'], ['default']],
    [['spiffe://example.org/api'], ['spiffe://example.org/api']],
    [['ROOTCA'], ['ROOTCA']],
    [['ALL'], ['ALL']],
    [['spiffe://partner.org'], ['spiffe://partner.org']],
    [
      ['default', 'spiffe://example.org/web', 'ROOTCA', 'ALL'],
      ['ROOTCA', 'ALL', 'spiffe://example.org/web', 'default'],
    ],
  ])('answers %j with exactly %j', (requested, expected) => {
    expect(names(requested)).toEqual(expected);
  });

  it('packs each secret in an Any of the Secret type url', () => {
    const [packed] = packSecrets(buildSecrets(snapshot, { resourceNames: ['default'] }, SDS_DEFAULTS));
    expect(packed!.typeUrl).toBe('type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret');
    expect(anyUnpack(packed!, SecretSchema)?.name).toBe('default');
  });

  it('gives the first identity as the default TLS certificate: PEM chain and PKCS#8 PEM key inline', () => {
    const [secret] = buildSecrets(snapshot, { resourceNames: ['default'] }, SDS_DEFAULTS);
    const message = create(SecretSchema, secret);
    if (message.type.case !== 'tlsCertificate') throw new Error('not a TLS certificate');
    const chain = message.type.value.certificateChain?.specifier;
    const key = message.type.value.privateKey?.specifier;
    expect(chain?.case).toBe('inlineBytes');
    expect(Buffer.from(chain!.value as Uint8Array).toString()).toBe(leafPem);
    expect(Buffer.from(key!.value as Uint8Array).toString()).toBe(
      `-----BEGIN PRIVATE KEY-----\n${keyPem.match(/.{1,64}/g)!.join('\n')}\n-----END PRIVATE KEY-----\n`,
    );
  });

  it('gives ALL as one SPIFFE validator config: own and federated-with trust domains, sorted, nothing else', () => {
    const [secret] = buildSecrets(snapshot, { resourceNames: ['ALL'] }, SDS_DEFAULTS);
    const message = create(SecretSchema, secret);
    if (message.type.case !== 'validationContext') throw new Error('not a validation context');
    const custom = message.type.value.customValidatorConfig!;
    expect(custom.name).toBe('envoy.tls.cert_validator.spiffe');
    const config = anyUnpack(custom.typedConfig!, SPIFFECertValidatorConfigSchema)!;
    expect(config.trustDomains.map((each) => each.name)).toEqual(['example.org', 'partner.org']);
    const pem = config.trustDomains.map((each) =>
      Buffer.from(each.trustBundle!.specifier.value as Uint8Array).toString(),
    );
    expect(pem).toEqual([ownPem, partnerPem]);
  });

  it('refuses names the caller may not have, listing them sorted (SPIRE: InvalidArgument)', () => {
    const attempt = () =>
      buildSecrets(
        snapshot,
        { resourceNames: ['spiffe://example.org/db', 'default', 'spiffe://unrelated.org'] },
        SDS_DEFAULTS,
      );
    expect(attempt).toThrow(UnauthorizedSecretsError);
    expect(attempt).toThrow(
      'workload is not authorized for the requested identities ["spiffe://example.org/db" "spiffe://unrelated.org"]',
    );
  });

  it('gives a caller without identities the bundles and nothing named default', () => {
    const empty = { ...snapshot, identities: [] };
    expect(buildSecrets(empty, { resourceNames: [] }, SDS_DEFAULTS).map((secret) => secret.name)).toEqual([
      'spiffe://example.org',
    ]);
    expect(() => buildSecrets(empty, { resourceNames: ['default'] }, SDS_DEFAULTS)).toThrow(UnauthorizedSecretsError);
  });

  it('uses the configured names instead of the defaults', () => {
    const settings = {
      ...SDS_DEFAULTS,
      defaultSvidName: 'mine',
      defaultBundleName: 'roots',
      defaultAllBundlesName: 'every',
    };
    const built = buildSecrets(snapshot, { resourceNames: ['mine', 'roots', 'every'] }, settings);
    expect(built.map((secret) => secret.name)).toEqual(['roots', 'every', 'mine']);
    expect(() => buildSecrets(snapshot, { resourceNames: ['default'] }, settings)).toThrow(UnauthorizedSecretsError);
  });

  it('gives trusted_ca without the SPIFFE validator, and refuses ALL then', () => {
    const node = envoy(1, 17);
    const [secret] = buildSecrets(snapshot, { resourceNames: ['ROOTCA'], node }, SDS_DEFAULTS);
    const message = create(SecretSchema, secret);
    if (message.type.case !== 'validationContext') throw new Error('not a validation context');
    expect(message.type.value.customValidatorConfig).toBeUndefined();
    expect(Buffer.from(message.type.value.trustedCa!.specifier.value as Uint8Array).toString()).toBe(ownPem);
    expect(() => buildSecrets(snapshot, { resourceNames: ['ALL'], node }, SDS_DEFAULTS)).toThrow(
      SpiffeValidatorRequiredError,
    );
  });
});

describe('usesSpiffeValidator', () => {
  it.each([
    ['no node', undefined, false, true],
    ['Envoy 1.18', envoy(1, 18), false, true],
    ['Envoy 2.0', envoy(2, 0), false, true],
    ['Envoy 1.17', envoy(1, 17), false, false],
    ['an Envoy without a build version', create(NodeSchema, { userAgentName: 'envoy' }), false, true],
    ['disabled by the agent', envoy(1, 30), true, false],
    ['disabled by the node (bool)', envoy(1, 30, { disable_spiffe_cert_validation: true }), false, false],
    ['disabled by the node (Go bool string)', envoy(1, 30, { disable_spiffe_cert_validation: 'T' }), false, false],
    ['enabled by the node over the agent', envoy(1, 30, { disable_spiffe_cert_validation: 'false' }), true, true],
    [
      'a node value that is no boolean is ignored',
      envoy(1, 30, { disable_spiffe_cert_validation: 'yes' }),
      true,
      false,
    ],
  ])('%s', (_case, node, disabled, expected) => {
    expect(usesSpiffeValidator(node, { ...SDS_DEFAULTS, disableSpiffeCertValidation: disabled })).toBe(expected);
  });
});
