import { type webcrypto } from 'node:crypto';
import { chainIssuerIds } from '@sigil/spiffe/x509';
import { Inject, Injectable, Logger, Optional, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { BundleService } from '../bundle/bundle.service.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { DEFAULT_AUTHORITY_CHECK_INTERVAL_SECONDS, SERVER_CONFIG, type ServerConfig } from '../config.js';
import { EntryChangeNotifier } from '../entries/entry-change-notifier.js';
import { AppError } from '../common/errors.js';
import { AuthorityKeyFactory } from './authority-key.factory.js';
import { AuthorityUsage } from './authority-usage.js';
import { AUTHORITY_METRICS, noAuthorityMetrics, type AuthorityMetrics } from './authority-metrics.js';
import type { Transaction } from '../database/transaction.js';
import type { AuthorityKind, CaKey } from './ca-key.js';
import { CaKeysRepository, versionOf, type CaKeyChanges, type NewCaKey } from './ca-keys.repository.js';
import { planRotation, type RotationStep } from './rotation-plan.js';
import { pauseInsideRotationForTests } from './rotation-test-hook.js';
import { toAuthorityKey, type AuthorityChange, type AuthorityKey } from './authority-key.js';
import { type SharedJwtAuthority } from '../downstream/downstream-contract.js';
import {
  checkUpstreamRoots,
  diffUpstreamAuthorities,
  publishedX509Authorities,
  storedUpstreamRoots,
  type UpstreamAuthoritiesChange,
} from './upstream-authorities.js';

/** What following the upstream server's authorities changed: its X.509 roots, and its JWT authorities by kid. */
export interface UpstreamFollowChange extends UpstreamAuthoritiesChange {
  readonly jwtAdded: readonly string[];
  readonly jwtRemoved: readonly string[];
}

/** The active key of one authority, ready to sign. */
export interface SigningAuthority {
  readonly key: AuthorityKey;
  readonly privateKey: webcrypto.CryptoKey;
}

/** What one {@link KeyManager.tick} did. */
export interface TickResult {
  /** True when this replica held the rotation lock. */
  readonly leader: boolean;
  /** The journal changes this replica made. */
  readonly changes: readonly AuthorityChange[];
  /** True when the journal or bundle changed and this replica reloaded it. */
  readonly reloaded: boolean;
}

/** The keys of one kind by state, as `localauthority … show` lists them. */
export interface AuthoritySlots {
  readonly active: AuthorityKey | undefined;
  readonly prepared: AuthorityKey | undefined;
  readonly old: readonly AuthorityKey[];
}

const KINDS: readonly AuthorityKind[] = ['x509', 'jwt'];

/**
 * The CA key journal's state machine (SPIRE `pkg/server/ca/manager`): for the X.509 CA and the JWT key, a key is
 * prepared and published in the bundle at half the active key's lifetime, activated at five sixths (the active one
 * becomes old), and pruned from the journal and the bundle when it expires. One replica at a time changes the
 * journal, under a PostgreSQL advisory lock; every replica reloads the journal and the bundle when they change:
 * at once when the replica that changed them notifies the others (PostgreSQL NOTIFY on the registry's listening
 * connection), else at its next tick. A timer calls {@link tick} every `authority_check_interval`; tests call it
 * after moving the injected clock.
 */
@Injectable()
export class KeyManager implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(KeyManager.name);
  private keys: readonly AuthorityKey[] = [];
  /** The upstream roots the journal stores, as last loaded ({@link storedUpstreamRoots}). */
  private upstreamRoots: readonly Buffer[] = [];
  private signing = new Map<AuthorityKind, SigningAuthority>();
  private version: string | undefined;
  private inFlight: Promise<TickResult> | undefined;
  private readonly changeListeners = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  /** Keys made before taking the rotation lock, for a factory that signs remotely ({@link createAhead}). */
  private readonly createdAhead = new Map<AuthorityKind, NewCaKey>();
  /** The reload in progress: reloads run one at a time. */
  private reloading: Promise<boolean> = Promise.resolve(false);
  private unsubscribeNotifier: (() => void) | undefined;

  constructor(
    private readonly journal: CaKeysRepository,
    private readonly bundles: BundleService,
    private readonly factory: AuthorityKeyFactory,
    private readonly usage: AuthorityUsage,
    @Inject(CLOCK) private readonly clock: Clock,
    @Optional() @Inject(AUTHORITY_METRICS) private readonly metrics: AuthorityMetrics = noAuthorityMetrics,
    @Optional()
    @Inject(SERVER_CONFIG)
    private readonly config: Pick<ServerConfig, 'authorityCheckIntervalSeconds'> | undefined = undefined,
    @Optional()
    @Inject(EntryChangeNotifier)
    private readonly notifier: EntryChangeNotifier | undefined = undefined,
  ) {}

  /** First start: waits for the lock so the keys exist (created here or by another replica) before serving. */
  async onModuleInit(): Promise<void> {
    this.unsubscribeNotifier = this.notifier?.subscribeAuthorityChanges(() => void this.reloadLogged());
    await this.tick({ waitForLock: true });
    const intervalSeconds = this.config?.authorityCheckIntervalSeconds ?? DEFAULT_AUTHORITY_CHECK_INTERVAL_SECONDS;
    this.timer = setInterval(() => void this.tickLogged(), intervalSeconds * 1000);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    this.unsubscribeNotifier?.();
    clearInterval(this.timer);
    await this.inFlight?.catch(() => undefined);
  }

  /**
   * Brings the journal up to date at the clock's time when this replica wins the rotation lock (or waits for it
   * with `waitForLock`), then reloads the journal and the bundle if anything changed. Concurrent calls share one run.
   */
  tick(options: { waitForLock?: boolean } = {}): Promise<TickResult> {
    this.inFlight ??= this.runTick(options.waitForLock ?? false).finally(() => (this.inFlight = undefined));
    return this.inFlight;
  }

  /**
   * Calls `listener` after this replica loaded a changed journal or bundle (a key prepared, activated, tainted,
   * revoked or pruned); returns the unsubscriber. The server re-issues its own TLS certificate then.
   */
  onChange(listener: () => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** The journal's keys of `kind` by state, as last loaded. */
  slots(kind: AuthorityKind): AuthoritySlots {
    const own = this.keys.filter((key) => key.kind === kind);
    return {
      active: own.find((key) => key.state === 'active'),
      prepared: own.find((key) => key.state === 'prepared'),
      old: own.filter((key) => key.state === 'old'),
    };
  }

  /** The active key of `kind` and its private key; `unavailable` before the first load. */
  signingAuthority(kind: AuthorityKind): SigningAuthority {
    const authority = this.signing.get(kind);
    if (authority === undefined) {
      throw new AppError('unavailable', `${kind} authority: no active key loaded yet, the authority is starting`);
    }
    return authority;
  }

  /** True once both authorities have an active key. */
  isReady(): boolean {
    return KINDS.every((kind) => this.signing.has(kind));
  }

  /**
   * Prepares a new key of `kind` now and publishes it in the bundle (`localauthority … prepare`). A prepared key
   * that is already there never signed anything, so it is replaced.
   */
  async prepare(kind: AuthorityKind): Promise<AuthorityKey> {
    await this.createAhead(kind, true);
    const created = await this.change(async (tx, rows, now, changes) => {
      const existing = rows.find((row) => row.kind === kind && row.state === 'prepared');
      if (existing !== undefined) await this.prune(tx, rows, existing, changes);
      return this.create(tx, rows, kind, 'prepared', now, changes);
    });
    return toAuthorityKey(created);
  }

  /** Activates the prepared key of `kind`, named by its authority id; the active key becomes old. */
  async activate(kind: AuthorityKind, authorityId: string): Promise<AuthorityKey> {
    const activated = await this.change(async (tx, rows, now, changes) => {
      const prepared = rows.find((row) => row.kind === kind && row.state === 'prepared');
      if (prepared === undefined) {
        throw new AppError('failed_precondition', `${kind} authority: there is no prepared key to activate`);
      }
      if (prepared.authorityId !== authorityId) {
        throw new AppError(
          'invalid_argument',
          `authorityId: '${authorityId}' is not the prepared ${kind} authority (that is '${prepared.authorityId}')`,
        );
      }
      return this.promote(tx, rows, prepared, now, changes);
    });
    return toAuthorityKey(activated);
  }

  /**
   * Marks an old key as tainted (`localauthority … taint`): it stays in the bundle, but the bundle's sequence moves
   * and its tainted authority IDs reach every agent through the sync, and each agent re-signs every SVID the key
   * issued (SPIRE's forced rotation).
   */
  async taint(kind: AuthorityKind, authorityId: string): Promise<AuthorityKey> {
    const tainted = await this.change(async (tx, rows, _now, changes) => {
      const key = this.findOld(rows, kind, authorityId, 'tainted');
      if (key.tainted) throw new AppError('failed_precondition', `authorityId: '${authorityId}' is already tainted`);
      return this.markTainted(tx, rows, key, changes);
    });
    return toAuthorityKey(tainted);
  }

  /**
   * Removes a tainted old key from the bundle (`localauthority … revoke`). Refused while an agent reports an SVID
   * issued by it that has not expired (or has not reported at all while its own SVID is valid), unless `force`:
   * then every such SVID stops verifying at once, wherever the new bundle reaches.
   */
  async revoke(kind: AuthorityKind, authorityId: string, options: { force?: boolean } = {}): Promise<AuthorityKey> {
    const revoked = await this.change(async (tx, rows, now, changes) => {
      const key = this.findOld(rows, kind, authorityId, 'revoked');
      if (!key.tainted) {
        throw new AppError('failed_precondition', `authorityId: '${authorityId}' must be tainted before it is revoked`);
      }
      if (key.revoked) throw new AppError('failed_precondition', `authorityId: '${authorityId}' is already revoked`);
      if (key.upstreamChain !== null) {
        throw new AppError(
          'failed_precondition',
          `authorityId: '${authorityId}' is an intermediate under the upstream CA, whose root stays in the bundle; ` +
            'revoke it at the upstream authority',
        );
      }
      if (options.force !== true) await this.refuseWhileInUse(tx, kind, authorityId, now);
      await this.journal.update(tx, key.id, { revoked: true });
      changes.push({ kind, transition: 'revoked', authorityId });
      return replaceRow(rows, key, { revoked: true });
    });
    return toAuthorityKey(revoked);
  }

  /**
   * Upstream authority sigil: the upstream roots the journal stores, as last loaded, which the upstream server's TLS
   * certificate must chain to. Empty before the first key the upstream server signed.
   */
  storedUpstreamAuthorities(): readonly Buffer[] {
    return this.upstreamRoots;
  }

  /**
   * Upstream authority sigil: stores `roots` (the top trust domain's X.509 authorities, DER, as the upstream server
   * answered them over authenticated mTLS) on every key the upstream server signed, and publishes them in our bundle
   * at once through the same journal → bundle path as a rotation, so every replica and agent of this trust domain
   * follows. Nothing is written when the set is the stored one.
   * @throws AppError `invalid_argument` when the set breaks {@link checkUpstreamRoots} (too many, not self-signed CA
   * certificates, none unexpired), `failed_precondition` when it drops the root the active or prepared key chains to
   * (what it signs would stop verifying: the operator moves to a key the upstream server's current key signs first,
   * `localauthority x509 prepare` then `activate`); nothing is written then.
   */
  async followUpstreamAuthorities(
    roots: readonly Uint8Array[],
    jwtAuthorities?: readonly SharedJwtAuthority[],
  ): Promise<UpstreamFollowChange> {
    let checked: Buffer[];
    try {
      checked = checkUpstreamRoots(roots, this.clock.now());
    } catch (error) {
      throw new AppError('invalid_argument', `upstream roots refused: ${(error as Error).message}`);
    }
    const wanted = [...new Set(checked.map((der) => der.toString('base64')))];
    return this.change(async (tx, rows, now) => {
      const diff = diffUpstreamAuthorities(rows, wanted);
      if (diff.orphaned.length > 0) {
        throw new AppError(
          'failed_precondition',
          `upstream roots refused: they drop the root that X.509 authorities ${diff.orphaned.join(', ')} chain to; ` +
            'prepare and activate a key the upstream server signs now (localauthority x509 prepare, then activate)',
        );
      }
      for (const id of diff.rowIds) {
        await this.journal.update(tx, id, { upstreamAuthorities: wanted });
        replaceRow(
          rows,
          rows.find((row) => row.id === id)!,
          { upstreamAuthorities: wanted },
        );
      }
      const jwt =
        jwtAuthorities === undefined
          ? { jwtAdded: [], jwtRemoved: [] }
          : await this.followUpstreamJwt(tx, jwtAuthorities, now);
      return { ...diff, ...jwt };
    });
  }

  /**
   * Upstream authority sigil: stores the upstream server's JWT authorities (its bundle's, with their expiry: its own
   * keys and those its downstream servers published, ours among them) in place of the last followed, when they
   * differ; {@link publish} adds the unexpired ones that are not our own keys to our bundle.
   */
  private async followUpstreamJwt(
    tx: Transaction,
    authorities: readonly SharedJwtAuthority[],
    now: Date,
  ): Promise<Pick<UpstreamFollowChange, 'jwtAdded' | 'jwtRemoved'>> {
    const wanted = authorities.filter((key) => now.getTime() < key.notAfter.getTime());
    const stored = (await this.journal.shared.list(tx)).filter((row) => row.origin === 'upstream');
    const identity = (key: { kid: string; publicKeyDer: Buffer; notAfter: Date }) =>
      `${key.kid}:${key.publicKeyDer.toString('base64')}:${key.notAfter.getTime()}`;
    const storedIds = new Set(stored.map(identity));
    const wantedIds = new Set(wanted.map(identity));
    if (storedIds.size === wantedIds.size && [...wantedIds].every((id) => storedIds.has(id))) {
      return { jwtAdded: [], jwtRemoved: [] };
    }
    await this.journal.shared.replaceUpstream(
      tx,
      wanted.map(({ kid, publicKeyDer, notAfter }) => ({ kid, publicKeyDer, notAfter, createdAt: now })),
    );
    const storedKids = new Set(stored.map((row) => row.kid));
    const wantedKids = new Set(wanted.map((key) => key.kid));
    return {
      jwtAdded: [...wantedKids].filter((kid) => !storedKids.has(kid)),
      jwtRemoved: [...storedKids].filter((kid) => !wantedKids.has(kid)),
    };
  }

  /**
   * A downstream server's JWT key (SPIRE's `PublishJWTAuthority`), for a caller the downstream guard authenticated:
   * stored and published in our bundle until it expires, so every agent and nested server of the trust domain
   * validates the JWT-SVIDs it signs. Its expiry is cut to `maxLifetimeSeconds` from now (as a downstream CA's
   * preferred TTL is); the caller uses the expiry we answer. Publishing the same key again is accepted (a retry) and
   * keeps the expiry stored first. Returns the key as stored.
   * @throws AppError `invalid_argument` when it expired; `already_exists` when its kid is one of our keys, the
   * upstream's or another key published before; `failed_precondition` when the caller already has `maxPerCaller`
   * unexpired keys.
   */
  async publishDownstreamJwtAuthority(
    caller: string,
    key: SharedJwtAuthority,
    limits: { readonly maxLifetimeSeconds: number; readonly maxPerCaller: number },
  ): Promise<SharedJwtAuthority> {
    return this.change(async (tx, rows, now) => {
      if (key.notAfter.getTime() <= now.getTime()) {
        throw new AppError('invalid_argument', `jwt_authority.expires_at: ${key.notAfter.toISOString()} has passed`);
      }
      // Whole seconds, as expires_at is sent.
      const latest = Math.floor(now.getTime() / 1000) * 1000 + limits.maxLifetimeSeconds * 1000;
      if (rows.some((row) => row.kind === 'jwt' && row.authorityId === key.kid)) {
        throw new AppError('already_exists', `jwt_authority.key_id: ${key.kid} is a JWT authority of this server`);
      }
      const shared = await this.journal.shared.list(tx);
      const same = shared.find((row) => row.kid === key.kid);
      if (
        same !== undefined &&
        (same.origin !== 'downstream' || same.publishedBy !== caller || !same.publicKeyDer.equals(key.publicKeyDer))
      ) {
        throw new AppError(
          'already_exists',
          `jwt_authority.key_id: ${key.kid} is already a JWT authority of this trust domain with another key or ` +
            'publisher; a new key needs a new key_id',
        );
      }
      const held = shared.filter(
        (row) =>
          row.origin === 'downstream' &&
          row.publishedBy === caller &&
          row.kid !== key.kid &&
          now.getTime() < row.notAfter.getTime(),
      ).length;
      if (held >= limits.maxPerCaller) {
        throw new AppError(
          'failed_precondition',
          `jwt_authority: ${caller} already has ${held} unexpired JWT keys published, at most ` +
            `${limits.maxPerCaller}; publish more once some have expired`,
        );
      }
      // A retry keeps the expiry answered first (unless that has passed).
      const first = same !== undefined && same.notAfter.getTime() > now.getTime() ? same.notAfter.getTime() : Infinity;
      const notAfter = new Date(Math.min(key.notAfter.getTime(), latest, first));
      await this.journal.shared.saveDownstream(tx, {
        kid: key.kid,
        publishedBy: caller,
        publicKeyDer: key.publicKeyDer,
        notAfter,
        createdAt: same?.createdAt ?? now,
      });
      return { kid: key.kid, publicKeyDer: key.publicKeyDer, notAfter };
    });
  }

  /**
   * The JWT authorities of our bundle as last loaded, with their expiry: our own keys and the shared ones (published
   * by downstream servers, or followed from the upstream server), unexpired. What a downstream server takes into its
   * bundle.
   */
  async bundleJwtAuthorities(): Promise<SharedJwtAuthority[]> {
    const now = this.clock.now();
    const inBundle = this.bundles.ownBundle().jwtAuthorities;
    const own = this.keys
      .filter((key) => key.kind === 'jwt' && !key.revoked)
      .map((key) => ({ kid: key.authorityId, publicKeyDer: key.publicKeyDer, notAfter: key.notAfter }));
    const shared = (await this.journal.shared.list()).map(({ kid, publicKeyDer, notAfter }) => ({
      kid,
      publicKeyDer,
      notAfter,
    }));
    const seen = new Set<string>();
    return [...own, ...shared].filter((key) => {
      if (seen.has(key.kid) || !inBundle.has(key.kid) || key.notAfter.getTime() <= now.getTime()) return false;
      seen.add(key.kid);
      return true;
    });
  }

  /** The one way a key becomes tainted (the operator's taint, or a taint of the upstream key that signed it). */
  private async markTainted(tx: Transaction, rows: CaKey[], key: CaKey, changes: AuthorityChange[]): Promise<CaKey> {
    await this.journal.update(tx, key.id, { tainted: true });
    changes.push({ kind: key.kind, transition: 'tainted', authorityId: key.authorityId });
    return replaceRow(rows, key, { tainted: true });
  }

  /**
   * Upstream authority sigil, SPIRE's reaction to a tainted upstream authority: when one of the upstream server's
   * `tainted` keys signed our active CA, we move at once to a CA its current key signed (the prepared one if that is
   * not tainted too, else a new one asked now), activate it, and taint our old key, so our agents re-sign everything
   * it issued; a prepared key so signed is replaced, and every other old key so signed is tainted too. Returns the
   * authority IDs it moved away from (empty when nothing was signed by a tainted key).
   */
  private async leaveTaintedUpstream(
    tx: Transaction,
    rows: CaKey[],
    tainted: ReadonlySet<string>,
    now: Date,
    changes: AuthorityChange[],
  ): Promise<string[]> {
    let prepared = rows.find((row) => row.kind === 'x509' && row.state === 'prepared');
    if (prepared !== undefined && signedByTaintedUpstream(prepared, tainted)) {
      await this.prune(tx, rows, prepared, changes);
      prepared = undefined;
    }
    const active = rows.find((row) => row.kind === 'x509' && row.state === 'active');
    if (active !== undefined && signedByTaintedUpstream(active, tainted)) {
      prepared ??= await this.create(tx, rows, 'x509', 'prepared', now, changes);
      if (signedByTaintedUpstream(prepared, tainted)) {
        throw new Error('upstream authority sigil: the upstream server signed our new CA with a key it has tainted');
      }
      await this.promote(tx, rows, prepared, now, changes);
    }
    const left: string[] = [];
    for (const row of [...rows]) {
      if (row.state !== 'old' || row.tainted || row.revoked || row.notAfter.getTime() <= now.getTime()) continue;
      if (!signedByTaintedUpstream(row, tainted)) continue;
      await this.markTainted(tx, rows, row, changes);
      left.push(row.authorityId);
    }
    return left;
  }

  /**
   * The upstream server's tainted authority IDs (upstream authority sigil only; undefined otherwise, before the first
   * key the upstream server signed (no stored root to authenticate it with, and no key to move away from), or when it
   * could not be asked: logged and counted, the next tick asks again).
   */
  private async upstreamTainted(): Promise<Set<string> | undefined> {
    if (this.upstreamRoots.length === 0) return undefined;
    try {
      return await this.factory.upstreamTaintedAuthorities(this.upstreamRoots);
    } catch (error) {
      this.metrics.upstreamBundleFailed('taints');
      this.logger.warn({
        msg: 'upstream authority sigil: could not ask the upstream server for its tainted keys; asking again at the next check',
        err: error,
      });
      return undefined;
    }
  }

  private async refuseWhileInUse(tx: Transaction, kind: AuthorityKind, authorityId: string, now: Date): Promise<void> {
    const { users, count } = await this.usage.usersOf(tx, authorityId, now);
    if (count === 0) return;
    const named = users
      .map(({ agentId, until }) =>
        until === null
          ? `${agentId} (has not reported which authorities issued its SVIDs)`
          : `${agentId} (until ${until.toISOString()})`,
      )
      .join(', ');
    throw new AppError(
      'failed_precondition',
      `authorityId: '${authorityId}' still issued ${kind === 'x509' ? 'X509' : 'JWT'}-SVIDs in use: ` +
        `${count} agent${count === 1 ? '' : 's'}, ${named}${count > users.length ? ', …' : ''}; ` +
        'wait until the agents have replaced them (tainting makes them re-sign at once) and expired, or revoke with ' +
        'force, which removes the key from the bundle now: every SVID it issued then fails verification',
    );
  }

  /** Reloads after another replica's notification; a failure waits for the next tick. */
  private async reloadLogged(): Promise<void> {
    try {
      await this.reloadIfChanged();
    } catch (error) {
      this.logger.error({ msg: 'ca key reload after a change notification failed', err: error });
    }
  }

  /** Tells the other replicas to reload now; if the notification is lost, they reload at their next tick. */
  private async notifyOthers(): Promise<void> {
    try {
      await this.notifier?.notifyAuthorityChange();
    } catch (error) {
      this.logger.warn({
        msg: 'could not notify the other replicas of a ca key change; they reload it at their next check',
        err: error,
      });
    }
  }

  private async tickLogged(): Promise<void> {
    try {
      await this.tick();
    } catch (error) {
      // A database outage must not stop signing: the replica keeps its loaded keys and retries on the next tick.
      this.logger.error({ msg: 'ca key rotation tick failed', err: error });
    }
  }

  private async runTick(waitForLock: boolean): Promise<TickResult> {
    // Not at start: a top server that cannot be reached must not hold up a restart; the next check asks.
    const tainted = waitForLock ? undefined : await this.upstreamTainted();
    const leaving =
      tainted !== undefined &&
      this.keys.some(
        (key) => key.kind === 'x509' && key.state !== 'old' && signedByTaintedUpstream(rowOf(key), tainted),
      );
    const wantsX509 = leaving || planRotation('x509', this.keys, this.clock.now()).some((step) => step.op === 'create');
    await this.createAhead('x509', wantsX509);
    // Upstream authority sigil: a new JWT key is published to the upstream server before the lock, as X.509 keys are
    // signed there; a refusal must not hold up the X.509 rotation, so without a published key the JWT kind keeps its
    // keys this run.
    const jwtReady = await this.createJwtAhead(
      planRotation('jwt', this.keys, this.clock.now()).some((step) => step.op === 'create'),
    );
    const outcome = await this.journal.withRotationLock(waitForLock, async (tx) => {
      const now = this.clock.now();
      const rows = await this.journal.listWithPrivateKeys(tx);
      const changes: AuthorityChange[] = [];
      for (const kind of KINDS) {
        for (const step of planRotation(kind, rows, now)) {
          if (kind === 'jwt' && !jwtReady && needsNewKey(step)) continue;
          await this.apply(tx, rows, step, now, changes);
        }
      }
      const left = tainted === undefined ? [] : await this.leaveTaintedUpstream(tx, rows, tainted, now, changes);
      await this.journal.shared.deleteExpired(tx, now);
      const published = await this.publish(tx, rows, now);
      await pauseInsideRotationForTests(changes);
      return { changes, published, left };
    });
    if (outcome.acquired && outcome.result.left.length > 0) {
      this.metrics.upstreamTaintRotation();
      this.logger.warn({
        msg:
          'upstream authority sigil: the upstream server tainted the key that signed our CA; moved to a CA its current ' +
          'key signed and tainted ours, so our agents re-sign what it issued',
        taintedAuthorityIds: outcome.result.left,
        activeAuthorityId: rowsActive(outcome.result.changes),
      });
    }
    const changes = outcome.acquired ? outcome.result.changes : [];
    this.forgetUsedAhead(changes);
    this.report(changes);
    if (outcome.acquired && (changes.length > 0 || outcome.result.published)) await this.notifyOthers();
    const reloaded = await this.reloadIfChanged();
    return { leader: outcome.acquired, changes, reloaded };
  }

  /** Runs an operator's change under the rotation lock (waiting for it), republishes and reloads. */
  private async change<T>(
    work: (tx: Transaction, rows: CaKey[], now: Date, changes: AuthorityChange[]) => Promise<T>,
  ): Promise<T> {
    const changes: AuthorityChange[] = [];
    const outcome = await this.journal.withRotationLock(true, async (tx) => {
      const now = this.clock.now();
      const rows = await this.journal.listWithPrivateKeys(tx);
      const result = await work(tx, rows, now, changes);
      await this.publish(tx, rows, now);
      return result;
    });
    if (!outcome.acquired) throw new AppError('unavailable', 'ca key journal: the rotation lock was not acquired');
    this.forgetUsedAhead(changes);
    this.report(changes);
    await this.notifyOthers();
    await this.reloadIfChanged();
    return outcome.result;
  }

  /**
   * An upstream Sigil server signs our X.509 CA over the network (up to a minute): that key is made before the
   * rotation lock's transaction, which would otherwise hold it (and, embedded, the whole database) meanwhile. A key
   * made ahead and not used (another replica rotated first) is dropped at the next run.
   */
  private async createAhead(kind: AuthorityKind, wanted: boolean): Promise<void> {
    this.createdAhead.delete(kind);
    if (!wanted || !this.factory.signsRemotely) return;
    await this.makeAhead(kind);
  }

  /**
   * Upstream authority sigil: the JWT key to create this run, published to the upstream server before the lock. A key
   * published before and not used yet is kept while more than half its lifetime is left (each new one counts against
   * the upstream server's per-caller limit), and dropped once no key is wanted. A refused or failed publication is
   * logged and counted: false then, and this run creates no JWT key (the current ones stay; the next run asks again).
   * True when the run may create a JWT key: one is ready, or the factory does not sign remotely.
   */
  private async createJwtAhead(wanted: boolean): Promise<boolean> {
    if (!wanted || !this.factory.signsRemotely) {
      this.createdAhead.delete('jwt');
      return true;
    }
    const kept = this.createdAhead.get('jwt');
    const now = this.clock.now().getTime();
    if (kept !== undefined && now < (kept.notBefore.getTime() + kept.notAfter.getTime()) / 2) return true;
    this.createdAhead.delete('jwt');
    try {
      await this.makeAhead('jwt');
      return true;
    } catch (error) {
      this.metrics.upstreamBundleFailed('jwt_publish');
      this.logger.warn({
        msg:
          'upstream authority sigil: the upstream server did not take our new JWT key; the JWT keys stay as they are ' +
          'and the next check publishes again (the X.509 rotation goes on)',
        reason: (error as Error).message,
      });
      return false;
    }
  }

  /**
   * Forgets the keys made ahead that committed `changes` put in the journal; one not used (lock not acquired, or the
   * transaction failed) stays for the next run ({@link createJwtAhead}).
   */
  private forgetUsedAhead(changes: readonly AuthorityChange[]): void {
    for (const [kind, key] of this.createdAhead) {
      if (changes.some((change) => change.kind === kind && change.authorityId === key.authorityId)) {
        this.createdAhead.delete(kind);
      }
    }
  }

  private async makeAhead(kind: AuthorityKind): Promise<void> {
    // At the bootstrap nothing is stored yet: a JWT key made with the first X.509 key goes to the upstream server
    // that key's answer authenticated, not to whoever answers on the agent socket.
    const bootstrap = this.createdAhead.get('x509')?.upstreamAuthorities ?? [];
    const trusted =
      this.upstreamRoots.length > 0 ? this.upstreamRoots : bootstrap.map((der) => Buffer.from(der, 'base64'));
    this.createdAhead.set(kind, await this.factory.create(kind, this.clock.now(), trusted));
  }

  private findOld(rows: CaKey[], kind: AuthorityKind, authorityId: string, verb: string): CaKey {
    const key = rows.find((row) => row.kind === kind && row.authorityId === authorityId);
    if (key === undefined) throw new AppError('not_found', `authorityId: no ${kind} authority '${authorityId}'`);
    if (key.state !== 'old') {
      throw new AppError(
        'failed_precondition',
        `authorityId: only an old ${kind} authority can be ${verb}, '${authorityId}' is ${key.state}`,
      );
    }
    return key;
  }

  private async apply(
    tx: Transaction,
    rows: CaKey[],
    step: RotationStep,
    now: Date,
    changes: AuthorityChange[],
  ): Promise<void> {
    switch (step.op) {
      case 'prune': {
        const key = rows.find((row) => row.id === step.id);
        if (key !== undefined) await this.prune(tx, rows, key, changes);
        return;
      }
      case 'create':
        await this.create(tx, rows, step.kind, step.state, now, changes);
        return;
      case 'activate': {
        const key = rows.find((row) =>
          step.id === 'created' ? row.kind === step.kind && row.state === 'prepared' : row.id === step.id,
        );
        if (key === undefined) throw new Error(`ca key journal: no prepared ${step.kind} key ${step.id} to activate`);
        await this.promote(tx, rows, key, now, changes);
        return;
      }
    }
  }

  private async create(
    tx: Transaction,
    rows: CaKey[],
    kind: AuthorityKind,
    state: 'prepared' | 'active',
    now: Date,
    changes: AuthorityChange[],
  ): Promise<CaKey> {
    // Forgotten once the run commits (forgetUsedAhead): a failed transaction leaves it for the next run; used once.
    const ahead = this.createdAhead.get(kind);
    const unused = ahead !== undefined && !rows.some((row) => row.id === ahead.id) ? ahead : undefined;
    const key = unused ?? (await this.factory.create(kind, now, storedUpstreamRoots(rows)));
    if (state === 'prepared') {
      await this.journal.insert(tx, key);
      rows.push({ ...key, revision: '' });
      changes.push({ kind, transition: 'prepared', authorityId: key.authorityId });
      return rows[rows.length - 1]!;
    }
    // An active key is created only when none can sign; one that expired retires first.
    await this.retireActive(tx, rows, kind, changes);
    const active = { ...key, state, activatedAt: now };
    await this.journal.insert(tx, active);
    rows.push({ ...active, revision: '' });
    changes.push({ kind, transition: 'activated', authorityId: key.authorityId });
    return rows[rows.length - 1]!;
  }

  private async promote(
    tx: Transaction,
    rows: CaKey[],
    prepared: CaKey,
    now: Date,
    changes: AuthorityChange[],
  ): Promise<CaKey> {
    // Retire first: at most one active key per kind (ca_keys_one_active_idx).
    await this.retireActive(tx, rows, prepared.kind, changes);
    await this.journal.update(tx, prepared.id, { state: 'active', activatedAt: now });
    changes.push({ kind: prepared.kind, transition: 'activated', authorityId: prepared.authorityId });
    return replaceRow(rows, prepared, { state: 'active', activatedAt: now });
  }

  private async retireActive(
    tx: Transaction,
    rows: CaKey[],
    kind: AuthorityKind,
    changes: AuthorityChange[],
  ): Promise<void> {
    const active = rows.find((row) => row.kind === kind && row.state === 'active');
    if (active === undefined) return;
    await this.journal.update(tx, active.id, { state: 'old' });
    replaceRow(rows, active, { state: 'old' });
    changes.push({ kind, transition: 'retired', authorityId: active.authorityId });
  }

  private async prune(tx: Transaction, rows: CaKey[], key: CaKey, changes: AuthorityChange[]): Promise<void> {
    await this.journal.deleteByIds(tx, [key.id]);
    rows.splice(rows.indexOf(key), 1);
    changes.push({ kind: key.kind, transition: 'pruned', authorityId: key.authorityId });
  }

  /**
   * Writes the bundle: every unexpired, unrevoked key of the journal, the prepared one included. True when the
   * stored bundle changed.
   */
  private async publish(tx: Transaction, rows: readonly CaKey[], now: Date): Promise<boolean> {
    // Shared keys with one of our kids (ours, as the upstream server answers them back; a revoked one included) never
    // stand in for our own; the upstream's key goes before a downstream server's of the same kid (a deeper server may
    // publish a kid the upstream server just made before we follow it), which is then not served.
    const kids = new Set(rows.filter((row) => row.kind === 'jwt').map((row) => row.authorityId));
    const upstreamKids = new Set<string>();
    const shared = (await this.journal.shared.list(tx)).filter((row) => {
      if (row.notAfter.getTime() <= now.getTime()) return false;
      if (kids.has(row.kid)) {
        if (row.origin === 'downstream' && upstreamKids.has(row.kid)) {
          this.logger.warn({
            msg:
              'a downstream server published a JWT key under a kid of the upstream server; the upstream key is ' +
              'published, the downstream one is not',
            kid: row.kid,
            publishedBy: row.publishedBy,
          });
        }
        return false;
      }
      kids.add(row.kid);
      if (row.origin === 'upstream') upstreamKids.add(row.kid);
      return true;
    });
    const published = rows
      .filter((row) => !row.revoked && now.getTime() < row.notAfter.getTime())
      // A stable order, so an unchanged set of keys never looks like a bundle change.
      .sort((a, b) => a.notBefore.getTime() - b.notBefore.getTime() || a.id.localeCompare(b.id));
    const { changed } = await this.bundles.replaceOwnAuthorities(
      tx,
      {
        x509Authorities: publishedX509Authorities(published, now),
        jwtAuthorities: [
          ...published
            .filter((row) => row.kind === 'jwt')
            .map((row) => ({ kid: row.authorityId, publicKeyDer: row.publicKeyDer })),
          ...shared.map((row) => ({ kid: row.kid, publicKeyDer: row.publicKeyDer })),
        ],
        taintedAuthorities: published.filter((row) => row.tainted).map((row) => row.authorityId),
      },
      now,
    );
    return changed;
  }

  /** Reloads the bundle, then the journal, when they changed; the bundle goes first so no replica signs with a key
   * its own bundle does not hold yet. */
  private async reloadIfChanged(): Promise<boolean> {
    // One at a time: a notification may arrive while a tick reloads.
    const run = this.reloading.catch(() => false).then(() => this.reloadJournalIfChanged());
    this.reloading = run;
    const reloaded = await run;
    if (reloaded) for (const listener of [...this.changeListeners]) listener();
    return reloaded;
  }

  private async reloadJournalIfChanged(): Promise<boolean> {
    const bundleReloaded = await this.bundles.refreshOwn();
    const version = await this.journal.journalVersion();
    if (version === this.version) return bundleReloaded;

    const rows = await this.journal.listWithPrivateKeys();
    const signing = new Map<AuthorityKind, SigningAuthority>();
    for (const row of rows.filter((candidate) => candidate.state === 'active')) {
      const cached = this.signing.get(row.kind);
      const privateKey = cached?.key.id === row.id ? cached.privateKey : await this.factory.unseal(row);
      signing.set(row.kind, { key: toAuthorityKey(row), privateKey });
    }
    const maxRevision = rows.reduce((max, row) => (BigInt(row.revision) > BigInt(max) ? row.revision : max), '0');
    this.keys = rows.map(toAuthorityKey);
    this.upstreamRoots = storedUpstreamRoots(rows);
    this.signing = signing;
    this.version = versionOf(rows.length, rows.length === 0 ? null : maxRevision);
    this.logger.log({
      msg: 'ca key journal loaded',
      keys: this.keys.map(({ kind, state, authorityId, notAfter }) => ({ kind, state, authorityId, notAfter })),
    });
    return true;
  }

  private report(changes: readonly AuthorityChange[]): void {
    for (const change of changes) {
      this.logger.log({ msg: `ca key ${change.transition}`, ...change });
      this.metrics.rotationEvent(change.kind, change.transition);
    }
  }
}

/**
 * True when `key` is one of our X.509 CAs the upstream Sigil server signed with a key it has since tainted: its
 * certificate's issuer (authority key identifier) is in the upstream's tainted list, the rule an agent applies to its
 * SVIDs ({@link chainIssuerIds}).
 */
function signedByTaintedUpstream(
  key: Pick<CaKey, 'kind' | 'certificateDer' | 'upstreamAuthorities'>,
  tainted: ReadonlySet<string>,
): boolean {
  if (key.kind !== 'x509' || key.upstreamAuthorities === null || key.certificateDer === null) return false;
  return chainIssuerIds([key.certificateDer]).some((id) => tainted.has(id));
}

/** The fields of a loaded key {@link signedByTaintedUpstream} reads. */
function rowOf(key: AuthorityKey): Pick<CaKey, 'kind' | 'certificateDer' | 'upstreamAuthorities'> {
  // A loaded key signed by the upstream Sigil server always carries its chain; the roots are not kept in memory.
  return {
    kind: key.kind,
    certificateDer: key.certificateDer,
    upstreamAuthorities: key.upstreamChainDer.length > 0 ? [] : null,
  };
}

/** True for a step that needs a key made this run: creating one, or activating the one just created. */
function needsNewKey(step: RotationStep): boolean {
  return step.op === 'create' || (step.op === 'activate' && step.id === 'created');
}

/** The X.509 authority a run's changes activated, if any (for the log). */
function rowsActive(changes: readonly AuthorityChange[]): string | undefined {
  return changes.find((change) => change.kind === 'x509' && change.transition === 'activated')?.authorityId;
}

/** Puts `key` with `changes` in its place in the working copy of the journal, and returns it. */
function replaceRow(rows: CaKey[], key: CaKey, changes: CaKeyChanges): CaKey {
  const index = rows.indexOf(key);
  if (index < 0) throw new Error(`ca key journal: key ${key.id} is not in the working copy`);
  const changed = { ...key, ...changes };
  rows[index] = changed;
  return changed;
}
