/**
 * A minimal node attestor, both sides, as README's "Writing an attestor" shows it: a node proves who it is with a
 * secret shared with the server beforehand (a fixture file of node name → secret). Test-only: a real attestor lives
 * in apps/server/src/node-attestation/<name>/ and apps/agent/src/attestor/node/<name>/, each listed in one line of
 * the side's NODE_ATTESTORS. test/integration/example-node-attestor.int-spec.ts registers this one.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Injectable } from '@nestjs/common';
import { ApiProperty } from '@nestjs/swagger';
import { IsString, Matches, MaxLength } from 'class-validator';
import type { NodeAttestor as AgentNodeAttestor } from '../../apps/agent/src/attestor/node/node-attestor.js';
import { AppError } from '../../apps/server/src/common/errors.js';
import {
  NodeAttestorOptionError,
  type NodeAttestation,
  type NodeAttestor,
} from '../../apps/server/src/node-attestation/node-attestor.js';

// ---- the server side (apps/server/src/node-attestation/preshared/) ----

/** The attestation request: the secret, and the agent's CSR that every attestation request carries. */
export class PresharedAttestationDto {
  @ApiProperty({ description: 'the secret shared with the server' })
  @IsString()
  @Matches(/^[A-Za-z0-9_-]{16,128}$/, { message: 'must be 16 to 128 letters, digits, _ or -' })
  secret!: string;

  @ApiProperty({ description: "PEM PKCS#10 request for the agent's key" })
  @IsString()
  @MaxLength(8192)
  csr!: string;
}

const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest();

@Injectable()
export class PresharedAttestor implements NodeAttestor<PresharedAttestationDto> {
  readonly type = 'preshared';
  readonly route = 'preshared';
  readonly optionNames = ['nodes_file', 'can_reattest'];
  readonly requestType = PresharedAttestationDto;
  private nodes: { name: string; secretSha256: Buffer }[] = [];
  private canReattest = true;

  /** `nodes_file`: JSON `{ "<node name>": "<secret>" }`; `can_reattest`: `true` (default) or `false`. */
  async configure(options: Readonly<Record<string, string>>): Promise<void> {
    const file = options['nodes_file'];
    if (file === undefined) throw new NodeAttestorOptionError('nodes_file', 'required');
    const nodes = JSON.parse(await readFile(file, 'utf8')) as Record<string, string>;
    this.nodes = Object.entries(nodes).map(([name, secret]) => ({ name, secretSha256: sha256(secret) }));
    const reattest = options['can_reattest'] ?? 'true';
    if (reattest !== 'true' && reattest !== 'false') {
      throw new NodeAttestorOptionError('can_reattest', `must be true or false, got ${JSON.stringify(reattest)}`);
    }
    this.canReattest = reattest === 'true';
  }

  /** Who holds this secret: the node named `<name>` becomes `spiffe://<td>/sigil/agent/preshared/<name>`. */
  async attest(request: PresharedAttestationDto): Promise<NodeAttestation> {
    const presented = sha256(request.secret);
    const node = this.nodes.find((candidate) => timingSafeEqual(candidate.secretSha256, presented));
    if (node === undefined) throw new AppError('permission_denied', 'preshared: no node holds this secret');
    return {
      agentIdSuffix: [node.name],
      selectors: [{ type: 'preshared', value: `node:${node.name}` }],
      canReattest: this.canReattest,
    };
  }
}

// ---- the agent side (apps/agent/src/attestor/node/preshared/) ----

/** Option `secret`: what the node presents. */
export function presharedAttestor(options: Readonly<Record<string, string>>): AgentNodeAttestor {
  const secret = options['secret'];
  if (secret === undefined) throw new Error('preshared attestor: option secret is required');
  return { type: 'preshared', route: 'preshared', evidence: async () => ({ secret }) };
}
