import { type IncomingMessage } from 'node:http';
import { TLSSocket } from 'node:tls';
import {
  applyDecorators,
  type CanActivate,
  createParamDecorator,
  type ExecutionContext,
  Inject,
  Injectable,
  UseGuards,
} from '@nestjs/common';
import { idFromCertificate, peerCertificateChain } from '@sigil/spiffe';
import { type FastifyRequest } from 'fastify';
import { AuthorisedEntriesService } from '../agent-api/authorised-entries.service.js';
import { AuditService } from '../audit/audit.service.js';
import { ClientSvidVerifier } from '../auth/client-svid.js';
import { Public } from '../auth/public.decorator.js';
import { BundleService } from '../bundle/bundle.service.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError, HTTP_STATUS_BY_KIND } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { DOWNSTREAM_JWT_AUTHORITY_PATH } from './downstream-contract.js';

/** The audit action of the downstream CA route (and of refusals of the authorities read), refused or not. */
export const DOWNSTREAM_CA_ACTION = 'downstream.new_x509_ca';
/** The audit action of the downstream JWT authority route, refused or not. */
export const DOWNSTREAM_JWT_AUTHORITY_ACTION = 'downstream.publish_jwt_authority';

// Keyed by the raw Node request, which the guard and the route handler both reach.
const callers = new WeakMap<IncomingMessage, string>();

/** Downstream SVID chains remembered across connections (few callers: one per nested server). */
const VERIFIED_DOWNSTREAM_SVIDS = 1_000;

/**
 * Authenticates the caller of the downstream CA route: the TLS client certificate must be an X509-SVID of our trust
 * domain (403 for another's) that verifies against our bundle now (401 when none is presented or it does not
 * verify: the rule every mTLS caller meets, {@link ClientSvidVerifier}), and its SPIFFE ID must have an unexpired
 * registration entry with `downstream: true` in this replica's entry index, which follows every entry change from
 * PostgreSQL (403 otherwise). Every refusal of a verified SVID is audited (an unverified certificate writes nothing).
 */
@Injectable()
export class DownstreamAuthGuard implements CanActivate {
  private readonly svids = new ClientSvidVerifier(
    VERIFIED_DOWNSTREAM_SVIDS,
    'downstream SVID',
    'required: the downstream CA route authenticates the X509-SVID of a downstream entry (mTLS)',
  );

  constructor(
    private readonly bundles: BundleService,
    private readonly entryIndex: AuthorisedEntriesService,
    private readonly audit: AuditService,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'trustDomain'>,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    if (context.getType() !== 'http') return false;
    const request = context.switchToHttp().getRequest<FastifyRequest>();
    const socket = request.raw.socket;
    if (!(socket instanceof TLSSocket)) {
      throw new AppError(
        'unauthenticated',
        'client certificate: the downstream CA route is served on the TLS port only',
      );
    }
    const trustDomain = leafTrustDomain(socket);
    if (trustDomain !== undefined && trustDomain !== this.config.trustDomain.name) {
      // Not audited: nothing of it is verified, and an unauthenticated caller must not write audit records.
      throw new AppError(
        'permission_denied',
        `client certificate: an X509-SVID of trust domain ${trustDomain}, not ${this.config.trustDomain.name}; ` +
          'only downstream entries of this trust domain may obtain a CA',
      );
    }
    const now = this.clock.now();
    const { spiffeId } = this.svids.verify(socket, this.bundles.ownBundle(), now);
    if (!this.entryIndex.isDownstream(spiffeId, now)) {
      throw await this.refuse(
        spiffeId,
        request.url === DOWNSTREAM_JWT_AUTHORITY_PATH ? DOWNSTREAM_JWT_AUTHORITY_ACTION : DOWNSTREAM_CA_ACTION,
        `client certificate: ${spiffeId} has no registration entry with downstream: true; only downstream entries ` +
          'may obtain a CA',
      );
    }
    callers.set(request.raw, spiffeId);
    return true;
  }

  private async refuse(actor: string, action: string, message: string): Promise<AppError> {
    const error = new AppError('permission_denied', message);
    await this.audit.record({
      actor,
      action,
      target: null,
      result: error.kind,
      statusCode: HTTP_STATUS_BY_KIND[error.kind],
    });
    return error;
  }
}

/**
 * The trust domain of the client certificate's SPIFFE ID, before any verification; undefined when it names none or is
 * not a certificate as given (the verification that follows refuses it with 401).
 */
function leafTrustDomain(socket: TLSSocket): string | undefined {
  const leaf = peerCertificateChain(socket.getPeerCertificate(true))[0];
  if (leaf === undefined) return undefined;
  try {
    return idFromCertificate(leaf).trustDomain.name;
  } catch {
    return undefined;
  }
}

/** Marks the downstream CA route: open to the admin guard, authenticated by {@link DownstreamAuthGuard}. */
export const DownstreamAuth = (): ClassDecorator & MethodDecorator =>
  applyDecorators(Public('read'), UseGuards(DownstreamAuthGuard));

/** Route parameter: the SPIFFE ID of the downstream caller (only behind {@link DownstreamAuthGuard}). */
export const DownstreamCaller = createParamDecorator((_data: unknown, context: ExecutionContext): string => {
  const caller = callers.get(context.switchToHttp().getRequest<FastifyRequest>().raw);
  if (caller === undefined) throw new Error('downstream route reached without the downstream guard');
  return caller;
});
