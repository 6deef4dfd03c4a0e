import { Injectable } from '@nestjs/common';
import { type Socket } from 'node:net';

/**
 * The connections accepted on the local admin Unix socket. Whoever can open that socket (a 0700 directory) is an
 * administrator, so a request is trusted by the connection it arrived on, never by anything it sends.
 */
@Injectable()
export class AdminSocketConnections {
  private readonly sockets = new WeakSet<Socket>();

  add(socket: Socket): void {
    this.sockets.add(socket);
  }

  has(socket: Socket): boolean {
    return this.sockets.has(socket);
  }
}
