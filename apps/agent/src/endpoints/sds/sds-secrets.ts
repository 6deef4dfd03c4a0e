import { type JsonValue, type MessageInitShape, create } from '@bufbuild/protobuf';
import { type Any, anyPack } from '@bufbuild/protobuf/wkt';
import { PEM_LABEL, toPem } from '@sigil/pki';
import { type TrustBundle } from '@sigil/spiffe';
import {
  type Node,
  SECRET_TYPE_URL,
  SPIFFE_CERT_VALIDATOR_NAME,
  SPIFFECertValidatorConfigSchema,
  SecretSchema,
} from '@sigil/workload-api/envoy-sds';
import { type AgentBundles, type WorkloadIdentity, federatedBundlesFor } from '../workload-api/workload-responses.js';

/**
 * The secret names Envoy asks for besides SPIFFE IDs and trust domain IDs, and whether validation contexts use
 * Envoy's SPIFFE certificate validator: SPIRE's agent `sds` settings (`default_svid_name`, `default_bundle_name`,
 * `default_all_bundles_name`, `disable_spiffe_cert_validation`), with SPIRE's defaults.
 */
export interface SdsSettings {
  /** The caller's first (default) X509-SVID as a TLS certificate secret. */
  readonly defaultSvidName: string;
  /** The agent's own trust domain bundle as a validation context secret. */
  readonly defaultBundleName: string;
  /** Every bundle the caller may see, in one SPIFFE validator config (Envoy ≥ 1.18). */
  readonly defaultAllBundlesName: string;
  /**
   * Validation contexts carry plain `trusted_ca` instead of the SPIFFE validator; a caller's node metadata
   * `disable_spiffe_cert_validation` (a boolean, or a string Go's `strconv.ParseBool` reads) overrides it.
   */
  readonly disableSpiffeCertValidation: boolean;
}

export const SDS_DEFAULTS: SdsSettings = Object.freeze({
  defaultSvidName: 'default',
  defaultBundleName: 'ROOTCA',
  defaultAllBundlesName: 'ALL',
  disableSpiffeCertValidation: false,
});

/** Node metadata key that turns the SPIFFE validator off (or on) for one Envoy, as in SPIRE. */
export const DISABLE_SPIFFE_CERT_VALIDATION_KEY = 'disable_spiffe_cert_validation';

/** What a caller holds at one moment: its identities (all signed) and the bundles of the agent. */
export interface SdsSnapshot {
  readonly identities: readonly WorkloadIdentity[];
  readonly bundles: AgentBundles;
}

/** The request fields secret building reads. */
export interface SdsSecretRequest {
  readonly resourceNames: readonly string[];
  readonly node?: Node | undefined;
}

/** Resource names the caller may not have (not its SPIFFE IDs, not a trust domain it sees, not a default name). */
export class UnauthorizedSecretsError extends Error {
  override readonly name = 'UnauthorizedSecretsError';

  constructor(readonly names: readonly string[]) {
    // SPIRE's message (Go's %q of the sorted names), which operators may search for.
    super(`workload is not authorized for the requested identities [${names.map((n) => JSON.stringify(n)).join(' ')}]`);
  }
}

/** The all-bundles secret asked for by an Envoy that gets no SPIFFE certificate validator (SPIRE: `Internal`). */
export class SpiffeValidatorRequiredError extends Error {
  override readonly name = 'SpiffeValidatorRequiredError';

  constructor(readonly secretName: string) {
    super(
      `secret ${JSON.stringify(secretName)} needs Envoy's SPIFFE certificate validator, which this Envoy does not get ` +
        `(older than 1.18, or disable_spiffe_cert_validation is set)`,
    );
  }
}

type SecretInit = MessageInitShape<typeof SecretSchema>;

function pemCertificates(certificates: readonly Uint8Array[]): Uint8Array {
  return new TextEncoder().encode(certificates.map((der) => toPem(PEM_LABEL.certificate, der)).join(''));
}

/** Go's `strconv.ParseBool`. */
function parseGoBool(value: JsonValue | undefined): boolean | undefined {
  if (typeof value === 'boolean') return value;
  if (typeof value !== 'string') return undefined;
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(value)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(value)) return false;
  return undefined;
}

/**
 * Whether validation contexts for this Envoy use the SPIFFE certificate validator: not when the agent or the
 * node's metadata turns it off, and not for an Envoy that says it is older than 1.18 (which has no such validator).
 * An Envoy that does not say its version gets it, as from SPIRE.
 */
export function usesSpiffeValidator(node: Node | undefined, settings: SdsSettings): boolean {
  const override = parseGoBool(node?.metadata?.[DISABLE_SPIFFE_CERT_VALIDATION_KEY]);
  if (override ?? settings.disableSpiffeCertValidation) return false;
  const version = node?.userAgentVersionType;
  if (version?.case !== 'userAgentBuildVersion') return true;
  const { majorNumber = 0, minorNumber = 0 } = version.value.version ?? {};
  return majorNumber > 1 || (majorNumber === 1 && minorNumber > 17);
}

function tlsCertificateSecret(name: string, identity: WorkloadIdentity): SecretInit {
  const svid = identity.x509Svid;
  if (svid === undefined) throw new Error(`entry ${identity.entryId}: X.509-SVID not signed yet`);
  const key = new TextEncoder().encode(toPem(PEM_LABEL.privateKey, svid.privateKey));
  return {
    name,
    type: {
      case: 'tlsCertificate',
      value: {
        certificateChain: { specifier: { case: 'inlineBytes', value: pemCertificates(svid.chain) } },
        privateKey: { specifier: { case: 'inlineBytes', value: key } },
      },
    },
  };
}

function spiffeValidationContext(name: string, bundles: readonly TrustBundle[]): SecretInit {
  const trustDomains = [...bundles]
    .sort((a, b) => (a.trustDomain.name < b.trustDomain.name ? -1 : a.trustDomain.name > b.trustDomain.name ? 1 : 0))
    .map((bundle) => ({
      name: bundle.trustDomain.name,
      trustBundle: { specifier: { case: 'inlineBytes' as const, value: pemCertificates(bundle.x509AuthoritiesDer()) } },
    }));
  const typedConfig: Any = anyPack(
    SPIFFECertValidatorConfigSchema,
    create(SPIFFECertValidatorConfigSchema, { trustDomains }),
  );
  return {
    name,
    type: {
      case: 'validationContext',
      value: { customValidatorConfig: { name: SPIFFE_CERT_VALIDATOR_NAME, typedConfig } },
    },
  };
}

function trustedCaValidationContext(name: string, bundle: TrustBundle): SecretInit {
  return {
    name,
    type: {
      case: 'validationContext',
      value: { trustedCa: { specifier: { case: 'inlineBytes', value: pemCertificates(bundle.x509AuthoritiesDer()) } } },
    },
  };
}

/**
 * The secrets answering `request` for a caller holding `snapshot` (SPIRE's `buildResponse`), in SPIRE's order:
 *
 * - validation contexts: the own trust domain's bundle named `spiffe://<td>` (or {@link SdsSettings.defaultBundleName}),
 *   each federated bundle the caller's entries federate with named `spiffe://<td>`, and all of them together named
 *   {@link SdsSettings.defaultAllBundlesName} (only with the SPIFFE validator, which holds several trust domains);
 * - TLS certificates: each identity named by its SPIFFE ID, and the first one named
 *   {@link SdsSettings.defaultSvidName}; PEM chain (leaf first) and PKCS#8 PEM key, inline.
 *
 * No names asks for everything the caller may see under its own name (trust domain and SPIFFE IDs; not the default
 * names), as SPIRE answers. Unlike SPIRE, one request may name the default bundle and the all-bundles secret (or a
 * SPIFFE ID and the default SVID name) together.
 * @throws UnauthorizedSecretsError listing the names that are none of these.
 * @throws SpiffeValidatorRequiredError for the all-bundles name when the SPIFFE validator is not used.
 */
export function buildSecrets(snapshot: SdsSnapshot, request: SdsSecretRequest, settings: SdsSettings): SecretInit[] {
  const names = new Set(request.resourceNames.filter((name) => name !== ''));
  const all = names.size === 0;
  const wanted = (name: string): boolean => all || names.has(name);
  const secrets: SecretInit[] = [];
  const emitted = new Set<string>();
  const add = (name: string, build: () => SecretInit): void => {
    names.delete(name);
    if (emitted.has(name)) return;
    emitted.add(name);
    secrets.push(build());
  };

  const { own } = snapshot.bundles;
  const federated = federatedBundlesFor(snapshot.identities, snapshot.bundles);
  const spiffe = usesSpiffeValidator(request.node, settings);
  const validationContext = (name: string, bundle: TrustBundle): SecretInit =>
    spiffe ? spiffeValidationContext(name, [bundle]) : trustedCaValidationContext(name, bundle);

  if (wanted(own.trustDomain.idString()))
    add(own.trustDomain.idString(), () => validationContext(own.trustDomain.idString(), own));
  if (names.has(settings.defaultBundleName))
    add(settings.defaultBundleName, () => validationContext(settings.defaultBundleName, own));
  if (names.has(settings.defaultAllBundlesName)) {
    // Without the SPIFFE validator, a validation context holds the CAs of one trust domain, not several.
    if (!spiffe) throw new SpiffeValidatorRequiredError(settings.defaultAllBundlesName);
    add(settings.defaultAllBundlesName, () =>
      spiffeValidationContext(settings.defaultAllBundlesName, [own, ...federated]),
    );
  }
  for (const bundle of federated) {
    const id = bundle.trustDomain.idString();
    if (wanted(id)) add(id, () => validationContext(id, bundle));
  }
  snapshot.identities.forEach((identity, index) => {
    const id = identity.spiffeId.toString();
    if (wanted(id)) add(id, () => tlsCertificateSecret(id, identity));
    if (index === 0 && names.has(settings.defaultSvidName)) {
      add(settings.defaultSvidName, () => tlsCertificateSecret(settings.defaultSvidName, identity));
    }
  });
  if (names.size > 0) throw new UnauthorizedSecretsError([...names].sort());
  return secrets;
}

/** `buildSecrets`, each packed in an `Any` of {@link SECRET_TYPE_URL}, as `DiscoveryResponse.resources` holds them. */
export function packSecrets(secrets: readonly SecretInit[]): Any[] {
  return secrets.map((secret) => anyPack(SecretSchema, create(SecretSchema, secret)));
}

export { SECRET_TYPE_URL };
