/**
 * A stand-in for the Docker Engine, which cannot run here: a real HTTP server on a real Unix socket answering the
 * two requests the `docker` workload attestor makes, shaped as the Docker Engine API reference (v1.47) describes
 * them:
 * - `GET /_ping` → 200 `OK` (text/plain) with the `API-Version`, `Docker-Experimental`, `OSType` and
 *   `Cache-Control`/`Pragma` headers;
 * - `GET /v<version>/containers/{id}/json` (ContainerInspect; unversioned paths too, deprecated but still
 *   served) → 200 ContainerInspectResponse, or 404 `{"message":"No such container: <id>"}`. Like the daemon it
 *   resolves the path's `{id}` as a full ID, then a name, then a unique ID prefix; a version outside
 *   [minimum, current] is a 400 with the daemon's message.
 * Anything else is 404 `{"message":"page not found"}`, as the daemon answers.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface FakeContainer {
  /** 64 hex digits. */
  readonly id: string;
  /** Without the leading `/`. */
  readonly name: string;
  /** Config.Image: the reference it was created with. */
  readonly image: string;
  /** Image: the ID of the image (`sha256:…`). */
  readonly imageId: string;
  readonly labels?: Readonly<Record<string, string>>;
  /** `NAME=value` strings. */
  readonly env?: readonly string[];
}

export interface FakeDockerEngineOptions {
  /** The daemon's API version, sent as `API-Version` (default 1.47). */
  readonly apiVersion?: string;
  /** The oldest version it serves (default 1.24). */
  readonly minApiVersion?: string;
  /** Waits this long before answering an inspect (to test deadlines). */
  readonly delayMs?: number;
}

export class FakeDockerEngine {
  /** Every request's method and path, in order. */
  readonly requests: string[] = [];
  readonly containers = new Map<string, FakeContainer>();
  /** Answers every inspect with this body and status instead (to test malformed or huge answers). */
  override: { status: number; body: string } | undefined;
  delayMs: number;

  private constructor(
    private readonly server: Server,
    private readonly dir: string,
    readonly socketPath: string,
    private readonly options: FakeDockerEngineOptions,
  ) {
    this.delayMs = options.delayMs ?? 0;
  }

  /** Listens on a fresh socket in a private temporary directory. */
  static async start(options: FakeDockerEngineOptions = {}): Promise<FakeDockerEngine> {
    const dir = await mkdtemp(join(tmpdir(), 'sigil-docker-'));
    const socketPath = join(dir, 'docker.sock');
    // The handler runs only once listening, after `engine` is set.
    const server = createServer((request, response) => engine.handle(request, response));
    const engine = new FakeDockerEngine(server, dir, socketPath, options);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, resolve);
    });
    return engine;
  }

  /** `unix://<socket>`, the form `docker_socket_path` takes. */
  get url(): string {
    return `unix://${this.socketPath}`;
  }

  add(container: FakeContainer): void {
    this.containers.set(container.id, container);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.dir, { recursive: true, force: true });
  }

  private handle(request: IncomingMessage, response: ServerResponse): void {
    const path = request.url ?? '/';
    this.requests.push(`${request.method} ${path}`);
    const current = this.options.apiVersion ?? '1.47';
    const headers = {
      'Api-Version': current,
      'Docker-Experimental': 'false',
      Ostype: 'linux',
      Server: 'Docker/27.4.0 (linux)',
    };
    const json = (status: number, body: unknown): void => {
      response.writeHead(status, { ...headers, 'Content-Type': 'application/json' });
      response.end(`${JSON.stringify(body)}\n`);
    };
    if (request.method === 'GET' && path === '/_ping') {
      response.writeHead(200, {
        ...headers,
        'Cache-Control': 'no-cache, no-store, must-revalidate',
        Pragma: 'no-cache',
        'Content-Type': 'text/plain; charset=utf-8',
      });
      response.end('OK');
      return;
    }
    const match = /^(?:\/v(\d+\.\d+))?\/containers\/([^/]+)\/json$/.exec(path);
    if (request.method !== 'GET' || match === null) return json(404, { message: 'page not found' });
    const [, version, reference] = match;
    const minimum = this.options.minApiVersion ?? '1.24';
    if (version !== undefined && compareVersions(version, minimum) < 0) {
      return json(400, {
        message: `client version ${version} is too old. Minimum supported API version is ${minimum}, please upgrade your client to a newer version`,
      });
    }
    if (version !== undefined && compareVersions(version, current) > 0) {
      return json(400, {
        message: `client version ${version} is too new. Maximum supported API version is ${current}`,
      });
    }
    const answer = (): void => {
      if (this.override !== undefined) {
        response.writeHead(this.override.status, { ...headers, 'Content-Type': 'application/json' });
        response.end(this.override.body);
        return;
      }
      const container = this.resolve(decodeURIComponent(reference!));
      if (container === undefined) return json(404, { message: `No such container: ${reference}` });
      json(200, inspectResponse(container));
    };
    if (this.delayMs > 0) setTimeout(answer, this.delayMs);
    else answer();
  }

  /** As the daemon resolves a container reference: full ID, then name, then unique ID prefix. */
  private resolve(reference: string): FakeContainer | undefined {
    const byId = this.containers.get(reference);
    if (byId !== undefined) return byId;
    const name = reference.replace(/^\//, '');
    const byName = [...this.containers.values()].find((container) => container.name === name);
    if (byName !== undefined) return byName;
    const byPrefix = [...this.containers.values()].filter((container) => container.id.startsWith(reference));
    return byPrefix.length === 1 ? byPrefix[0] : undefined;
  }
}

function compareVersions(a: string, b: string): number {
  const [aMajor, aMinor] = a.split('.').map(Number) as [number, number];
  const [bMajor, bMinor] = b.split('.').map(Number) as [number, number];
  return aMajor !== bMajor ? aMajor - bMajor : aMinor - bMinor;
}

/** A ContainerInspectResponse of a running container, as `docker run -d --name <name> <image>` leaves it. */
export function inspectResponse(container: FakeContainer): Record<string, unknown> {
  return {
    Id: container.id,
    Created: '2026-12-05T08:00:00.000000000Z',
    Path: '/docker-entrypoint.sh',
    Args: ['nginx', '-g', 'daemon off;'],
    State: {
      Status: 'running',
      Running: true,
      Paused: false,
      Restarting: false,
      OOMKilled: false,
      Dead: false,
      Pid: 4242,
      ExitCode: 0,
      Error: '',
      StartedAt: '2026-12-05T08:00:01.000000000Z',
      FinishedAt: '0001-01-01T00:00:00Z',
    },
    Image: container.imageId,
    ResolvConfPath: `/var/lib/docker/containers/${container.id}/resolv.conf`,
    HostnamePath: `/var/lib/docker/containers/${container.id}/hostname`,
    HostsPath: `/var/lib/docker/containers/${container.id}/hosts`,
    LogPath: `/var/lib/docker/containers/${container.id}/${container.id}-json.log`,
    Name: `/${container.name}`,
    RestartCount: 0,
    Driver: 'overlay2',
    Platform: 'linux',
    MountLabel: '',
    ProcessLabel: '',
    AppArmorProfile: 'docker-default',
    ExecIDs: null,
    HostConfig: {
      Binds: null,
      NetworkMode: 'bridge',
      RestartPolicy: { Name: 'no', MaximumRetryCount: 0 },
      AutoRemove: false,
      Privileged: false,
      ReadonlyRootfs: false,
      CgroupnsMode: 'private',
      CgroupParent: '',
    },
    GraphDriver: {
      Name: 'overlay2',
      Data: { MergedDir: `/var/lib/docker/overlay2/${container.id}/merged` },
    },
    Mounts: [],
    Config: {
      Hostname: container.id.slice(0, 12),
      Domainname: '',
      User: '',
      AttachStdin: false,
      AttachStdout: false,
      AttachStderr: false,
      ExposedPorts: { '80/tcp': {} },
      Tty: false,
      OpenStdin: false,
      StdinOnce: false,
      Env: container.env ?? ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['nginx', '-g', 'daemon off;'],
      Image: container.image,
      Volumes: null,
      WorkingDir: '',
      Entrypoint: ['/docker-entrypoint.sh'],
      OnBuild: null,
      Labels: container.labels ?? {},
      StopSignal: 'SIGQUIT',
    },
    NetworkSettings: {
      Bridge: '',
      SandboxID: 'f2a5c1d7e3b9',
      Ports: { '80/tcp': null },
      Networks: {
        bridge: {
          IPAMConfig: null,
          Links: null,
          Aliases: null,
          NetworkID: '7ea29fc1412292a2d7bba362f9253545fecdfa8ce9a6e37dd10ba8bee7129812',
          EndpointID: '8b3e1b4d2c7f',
          Gateway: '172.17.0.1',
          IPAddress: '172.17.0.2',
          IPPrefixLen: 16,
          MacAddress: '02:42:ac:11:00:02',
          DNSNames: null,
        },
      },
    },
  };
}

/** A container with a random ID and image ID. */
export function randomContainer(fields: Omit<FakeContainer, 'id' | 'imageId'> & { imageId?: string }): FakeContainer {
  return {
    id: randomBytes(32).toString('hex'),
    imageId: `sha256:${randomBytes(32).toString('hex')}`,
    ...fields,
  };
}
