import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { certificatesFromPem, pemBlocks } from '@sigil/pki';
import { TrustBundle, TrustDomain, idFromCertificate } from '@sigil/spiffe';

/*
 * The files the agent configuration names (trust bundle, x509pop certificate and key), read and checked while the
 * configuration loads so that a bad file stops the agent before it contacts a server.
 */

/** Reads a file named by key `label`, recording why it cannot be read. */
export function readNamedFile(label: string, path: string, problems: string[]): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    problems.push(`${label}: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    return undefined;
  }
}

/** The trust domain named by a CA certificate's URI SAN (`spiffe://<td>`). */
function trustDomainOfAuthority(bundle: TrustBundle): TrustDomain | string {
  const names = new Set<string>();
  for (const certificate of bundle.x509AuthoritiesDer()) {
    try {
      names.add(idFromCertificate(certificate).trustDomain.name);
    } catch {
      // No single spiffe:// URI SAN: the other authorities may name the trust domain.
    }
  }
  if (names.size !== 1) {
    return names.size === 0
      ? 'names no trust domain (no CA certificate has a spiffe:// URI SAN): set --trust-domain'
      : `names several trust domains (${[...names].sort().join(', ')}): set --trust-domain`;
  }
  return TrustDomain.parse([...names][0] as string);
}

/**
 * Parses a trust bundle file: PEM CA certificates (`sigil-server bundle show`) or a SPIFFE bundle in JWKS form
 * (`bundle show --format spiffe`). The trust domain is `configured` or, when absent, the one its CAs name.
 */
export function parseTrustBundleFile(
  text: string,
  configured: TrustDomain | undefined,
): { bundle: TrustBundle; trustDomain: TrustDomain } | string {
  // The parsers want a trust domain; when none is configured, parse under a reserved name (RFC 2606 `.invalid`)
  // and re-home the bundle below under the trust domain its CA certificates name.
  const parsingDomain = configured ?? TrustDomain.parse('unknown.invalid');
  let bundle: TrustBundle;
  try {
    bundle = text.trimStart().startsWith('{')
      ? TrustBundle.parseJwks(parsingDomain, text)
      : TrustBundle.fromX509Pem(parsingDomain, text);
  } catch (error) {
    return `is neither PEM CA certificates nor a SPIFFE bundle: ${(error as Error).message}`;
  }
  // The DER forms throughout: the parsed objects would load @peculiar/x509 at start for nothing.
  const authorities = bundle.x509AuthoritiesDer();
  if (authorities.length === 0) return 'holds no X.509 authority';
  const named = trustDomainOfAuthority(bundle);
  if (configured === undefined) {
    if (typeof named === 'string') return named;
    return {
      bundle: TrustBundle.create(named, {
        x509Authorities: authorities,
        jwtAuthorities: bundle.jwtAuthorities,
        ...(bundle.sequenceNumber !== undefined && { sequenceNumber: bundle.sequenceNumber }),
        ...(bundle.refreshHintSeconds !== undefined && { refreshHintSeconds: bundle.refreshHintSeconds }),
      }),
      trustDomain: named,
    };
  }
  if (typeof named !== 'string' && !named.equals(configured)) {
    return `holds authorities of trust domain ${named.name}, not of the configured ${configured.name}`;
  }
  return { bundle, trustDomain: configured };
}

/** Checks an x509pop certificate chain and key file: PEM certificates, and one PEM private key that parses. */
export function checkX509popFiles(labels: { cert: string; key: string }, certFile: string, keyFile: string): string[] {
  const problems: string[] = [];
  const certText = readNamedFile(labels.cert, certFile, problems);
  if (certText !== undefined) {
    try {
      if (certificatesFromPem(certText).length === 0) problems.push(`${labels.cert}: ${certFile} holds no certificate`);
    } catch (error) {
      problems.push(`${labels.cert}: ${certFile} is not PEM certificates: ${(error as Error).message}`);
    }
  }
  const keyText = readNamedFile(labels.key, keyFile, problems);
  if (keyText !== undefined) {
    try {
      const keys = pemBlocks(keyText).filter((block) => block.label.endsWith('PRIVATE KEY'));
      if (keys.length !== 1) throw new Error(`expected one PRIVATE KEY block, found ${keys.length}`);
      createPrivateKey(keyText);
    } catch (error) {
      problems.push(`${labels.key}: ${keyFile} is not a PEM private key: ${(error as Error).message}`);
    }
  }
  return problems;
}
