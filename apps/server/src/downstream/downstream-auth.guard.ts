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
import { SpiffeError, peerCertificateChain, verifyX509SvidSync } from '@sigil/spiffe';
import { type FastifyRequest } from 'fastify';
import { AuditService } from '../audit/audit.service.js';
import { Public } from '../auth/public.decorator.js';
import { BundleService } from '../bundle/bundle.service.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError, HTTP_STATUS_BY_KIND } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { DownstreamEntries } from './downstream-entries.js';

/** The audit action of the downstream CA route, refused or not. */
export const DOWNSTREAM_CA_ACTION = 'downstream.new_x509_ca';

// Keyed by the raw Node request, which the guard and the route handler both reach.
const callers = new WeakMap<IncomingMessage, string>();

/**
 * Authenticates the caller of the downstream CA route: the TLS client certificate must be an X509-SVID of our trust
 * domain that verifies against our bundle now (401 when none is presented or it does not verify), and its SPIFFE ID
 * must have an unexpired registration entry with `downstream: true` (403 otherwise, as for an SVID of another trust
 * domain). Every refusal of a presented certificate is audited.
 */
@Injectable()
export class DownstreamAuthGuard implements CanActivate {
  constructor(
    private readonly bundles: BundleService,
    private readonly downstream: DownstreamEntries,
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
    const chain = peerCertificateChain(socket.getPeerCertificate(true));
    if (chain.length === 0) {
      throw new AppError(
        'unauthenticated',
        'client certificate: required: the downstream CA route authenticates the X509-SVID of a downstream entry (mTLS)',
      );
    }
    let spiffeId: string;
    try {
      spiffeId = verifyX509SvidSync(chain, this.bundles.ownBundle(), { now: this.clock.now() }).spiffeId.toString();
    } catch (error) {
      if (!(error instanceof SpiffeError)) throw error;
      if (error.code === 'ERR_BUNDLE_NOT_FOUND') {
        throw await this.refuse(
          'unknown',
          `client certificate: not an X509-SVID of trust domain ${this.config.trustDomain.name}; ` +
            `only its downstream entries may obtain a CA (${error.message})`,
        );
      }
      throw new AppError('unauthenticated', `client certificate: ${error.message}`, { cause: error });
    }
    if (!(await this.downstream.isDownstream(spiffeId))) {
      throw await this.refuse(
        spiffeId,
        `client certificate: ${spiffeId} has no registration entry with downstream: true; only downstream entries ` +
          'may obtain a CA',
      );
    }
    callers.set(request.raw, spiffeId);
    return true;
  }

  private async refuse(actor: string, message: string): Promise<AppError> {
    const error = new AppError('permission_denied', message);
    await this.audit.record({
      actor,
      action: DOWNSTREAM_CA_ACTION,
      target: null,
      result: error.kind,
      statusCode: HTTP_STATUS_BY_KIND[error.kind],
    });
    return error;
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
