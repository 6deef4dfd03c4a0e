import { Inject, Injectable } from '@nestjs/common';
import type { X509SvidRequest } from '@sigil/agent-api';
import { SpiffeId } from '@sigil/spiffe';
import { AgentsService } from '../agents/agents.service.js';
import { CaService, type CsrSvidRequest } from '../ca/ca.service.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import type { Entry } from '../entries/entry.js';
import type { CallingAgent } from './agent-request.js';
import { AuthorisedEntriesService } from './authorised-entries.service.js';
import { AgentSigningBudget } from './signing-budget.js';

/** The outcome of one CSR of a batch: the signed chain, or why it was refused (the others go on). */
export type X509SvidResult =
  | {
      readonly ok: true;
      readonly entryId: string;
      /** Leaf first, then our CA's intermediates when it is an intermediate. */
      readonly certificateChainDer: readonly Uint8Array[];
      readonly expiresAt: Date;
    }
  | { readonly ok: false; readonly entryId: string; readonly error: AppError };

interface ParsedEntryId {
  readonly text: string;
  readonly id: SpiffeId;
  readonly isCanonical: boolean;
}

export interface SignedEntryJwtSvid {
  readonly spiffeId: string;
  readonly token: string;
  readonly expiresAt: Date;
}

/**
 * Signs workload SVIDs for an agent, only for entries authorised for it: X.509-SVIDs from CSRs in batches (each
 * CSR's signature verified, its URI SAN if any equal to the entry's SPIFFE ID, DNS names and TTL from the entry),
 * and JWT-SVIDs. Each CSR of a batch counts against the agent's X.509 budget, each JWT-SVID against its JWT budget,
 * and the signing takes turns with other agents' in one fair queue ({@link AgentSigningBudget}).
 */
@Injectable()
export class SvidSigningService {
  /**
   * Each index entry's SPIFFE ID, parsed once: index entries are replaced, never changed, on each revision, and the
   * cached text is compared anyway. Parsing twice per CSR (entry and URI SAN) cost about 5 % of signing.
   */
  private readonly parsedIds = new WeakMap<Entry, ParsedEntryId>();

  constructor(
    private readonly index: AuthorisedEntriesService,
    private readonly ca: CaService,
    private readonly budget: AgentSigningBudget,
    private readonly agents: AgentsService,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  /**
   * Checks again, right before signing, that the agent is still attested with this SVID: the guard checked it when
   * the request arrived, but a request can then wait (an index catch-up, its turn in the signing queue) while the
   * agent is evicted or banned. The check is an in-memory cache hit, dropped at once on evict and ban.
   *
   * @throws AppError `permission_denied` when the agent was evicted, banned or renewed meanwhile
   */
  private async stillActive(agent: CallingAgent): Promise<void> {
    await this.agents.requireActive(agent.spiffeId, agent.serialNumber);
  }

  /**
   * One result per request, in order. Every request costs one unit of the agent's X.509 budget, a duplicate too (it
   * was sent and parsed; SPIRE charges `len(params)` as well); a second request for an entry already in the batch is
   * refused on its own (`invalid_argument`) and not signed.
   *
   * @throws AppError `resource_exhausted` when the agent has too many batches in progress or too small a budget left
   * for the whole batch (nothing is signed then); `unavailable` when the server's signing queue is full.
   */
  async signX509Svids(agent: CallingAgent, requests: readonly X509SvidRequest[]): Promise<X509SvidResult[]> {
    const leave = this.budget.enterBatch(agent.spiffeId);
    try {
      this.budget.charge(agent.spiffeId, 'x509', requests.length);
      const results = new Array<X509SvidResult>(requests.length);
      const toSign: { request: X509SvidRequest; index: number }[] = [];
      const firstIndex = new Map<string, number>();
      requests.forEach((request, index) => {
        const first = firstIndex.get(request.entryId);
        if (first === undefined) {
          firstIndex.set(request.entryId, index);
          toSign.push({ request, index });
        } else {
          results[index] = {
            ok: false,
            entryId: request.entryId,
            error: new AppError(
              'invalid_argument',
              `csrs.${index}.entry_id: entry ${JSON.stringify(request.entryId)} is already requested by csrs.${first} ` +
                `of this batch`,
            ),
          };
        }
      });
      const authorised = await this.authorisedIncluding(agent, [...firstIndex.keys()]);
      const signed = await this.budget.inTurn(agent.spiffeId, 'x509', toSign, async (chunk) => {
        await this.stillActive(agent);
        return this.signChunk(agent, authorised, chunk, this.clock.now());
      });
      toSign.forEach(({ index }, position) => (results[index] = signed[position]!));
      return results;
    } finally {
      leave();
    }
  }

  /**
   * Signs one chunk of the fair queue: the entries' checks here, then every CSR of the chunk handed over together
   * ({@link CaService.signX509SvidCsrs}: on a signing worker, or on the event loop without workers).
   */
  private async signChunk(
    agent: CallingAgent,
    authorised: ReadonlyMap<string, Entry>,
    chunk: readonly { request: X509SvidRequest; index: number }[],
    now: Date,
  ): Promise<X509SvidResult[]> {
    const results = new Array<X509SvidResult>(chunk.length);
    const requests: CsrSvidRequest[] = [];
    const positions: number[] = [];
    chunk.forEach(({ request, index }, position) => {
      try {
        const entry = this.authorisedEntry(agent, authorised, request.entryId, now);
        const spiffeId = this.spiffeIdOf(entry);
        requests.push({
          spiffeId: spiffeId.id,
          entrySpiffeId: entry.spiffeId,
          entrySpiffeIdCanonical: spiffeId.isCanonical,
          csr: request.csr,
          field: `csrs.${index}.csr`,
          dnsNames: entry.dnsNames,
          ...(entry.x509SvidTtl > 0 && { ttlSeconds: entry.x509SvidTtl }),
        });
        positions.push(position);
      } catch (error) {
        if (!(error instanceof AppError)) throw error;
        results[position] = { ok: false, entryId: request.entryId, error };
      }
    });
    const signed = await this.ca.signX509SvidCsrs(requests);
    signed.forEach((outcome, at) => {
      const position = positions[at]!;
      const { entryId } = chunk[position]!.request;
      results[position] =
        outcome instanceof AppError ? { ok: false, entryId, error: outcome } : { ok: true, entryId, ...outcome };
    });
    return results;
  }

  /**
   * @throws AppError `resource_exhausted` when the agent's JWT budget is spent; `unavailable` when the server's
   * signing queue is full.
   */
  async signJwtSvid(agent: CallingAgent, entryId: string, audience: readonly string[]): Promise<SignedEntryJwtSvid> {
    this.budget.charge(agent.spiffeId, 'jwt');
    const entry = this.authorisedEntry(
      agent,
      await this.authorisedIncluding(agent, [entryId]),
      entryId,
      this.clock.now(),
    );
    const [signed] = await this.budget.inTurn(agent.spiffeId, 'jwt', [entry], async ([turn]) => {
      await this.stillActive(agent);
      return Promise.all([
        this.ca.signJwtSvid({
          spiffeId: this.spiffeIdOf(turn!).id,
          audience,
          ...(turn!.jwtSvidTtl > 0 && { ttlSeconds: turn!.jwtSvidTtl }),
        }),
      ]);
    });
    return { spiffeId: entry.spiffeId, ...signed! };
  }

  /**
   * The agent's authorised entries; when some asked-for entry is not among them, after catching the index up once:
   * the agent may have learnt of the entry from a replica that is ahead of this one.
   */
  private async authorisedIncluding(
    agent: CallingAgent,
    entryIds: readonly string[],
  ): Promise<ReadonlyMap<string, Entry>> {
    const authorised = this.index.authorisedFor(agent);
    if (entryIds.every((id) => authorised.has(id))) return authorised;
    await this.index.refresh();
    return this.index.authorisedFor(agent);
  }

  /** The entry's parsed SPIFFE ID, and whether its text is already canonical. */
  private spiffeIdOf(entry: Entry): ParsedEntryId {
    let parsed = this.parsedIds.get(entry);
    if (parsed?.text !== entry.spiffeId) {
      const id = SpiffeId.parse(entry.spiffeId);
      parsed = { text: entry.spiffeId, id, isCanonical: id.toString() === entry.spiffeId };
      this.parsedIds.set(entry, parsed);
    }
    return parsed;
  }

  private authorisedEntry(
    agent: CallingAgent,
    authorised: ReadonlyMap<string, Entry>,
    entryId: string,
    now: Date,
  ): Entry {
    const entry = authorised.get(entryId);
    // The same answer for an entry of another agent and for no entry at all: an agent learns nothing of others.
    if (!entry) {
      throw new AppError(
        'permission_denied',
        `entry_id: entry ${JSON.stringify(entryId)} is not authorised for agent ${agent.spiffeId}`,
      );
    }
    if (entry.expiresAt !== null && entry.expiresAt.getTime() <= now.getTime()) {
      throw new AppError(
        'failed_precondition',
        `entry_id: entry ${entryId} expired at ${entry.expiresAt.toISOString()}`,
      );
    }
    return entry;
  }
}
