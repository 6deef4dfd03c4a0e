import { ContextLogger } from '@sigil/logging';
import {
  SelectorError,
  checkSelector,
  isSocketPath,
  parseOptionDurationMs,
  parseOptionList,
  type Selector,
} from '@sigil/runtime';
import { readContainerIdentity, type ContainerIdentity } from '../cgroups/container-identity.js';
import { type WorkloadAttestorContext, type WorkloadAttestorPlugin } from '../registry.js';
import { WorkloadAttestationError, type WorkloadAttestor, type WorkloadCaller } from '../workload-attestor.js';
import { DOCKER_API_VERSION, type ContainerInspect, DockerEngineClient } from './docker-engine-client.js';

/**
 * The `docker` workload attestor (SPIRE's plug-in of that name): the caller's container from its cgroups
 * (`readContainerIdentity`), then the Docker Engine API's inspect of that container, gives SPIRE's selectors:
 * `docker:label:<key>:<value>` for each label, `docker:image_id:<Config.Image>` (the image reference the container
 * was created with, as SPIRE's value is), `docker:image_config_digest:<Image>` (the ID of the image it runs) and
 * `docker:env:<NAME>=<value>` for the variables `env_allow_list` names (SPIRE gives every variable: environments
 * hold secrets, and a selector is logged and compared like any other).
 *
 * A process in no container, or in a container this daemon does not know (a kubelet's containerd container, a
 * container that has just gone), gets no selectors and no error. A daemon that cannot be reached or answers an
 * error fails the call: the caller is in a container whose selectors cannot be known, and answering without them
 * could hand it a lesser identity than its entries meant (SPIRE retries the inspect three times, then fails too).
 */

export const DOCKER_ATTESTOR_TYPE = 'docker';

/** SPIRE's default (`docker_socket_path`). */
export const DEFAULT_DOCKER_SOCKET = 'unix:///var/run/docker.sock';
export const DEFAULT_DOCKER_REQUEST_TIMEOUT_MS = 5_000;

export interface DockerAttestorOptions {
  /** Absolute path of the daemon's socket. */
  readonly socketPath: string;
  /** As the operator wrote it, for messages. */
  readonly socketName: string;
  /** A fixed Engine API version (`docker_version`, SPIRE's option), else negotiated. */
  readonly apiVersion: string | undefined;
  /** Names of the environment variables that give `docker:env:` selectors. */
  readonly envAllowList: ReadonlySet<string>;
  readonly requestTimeoutMs: number;
}

const OPTION_NAMES = ['docker_socket_path', 'docker_version', 'env_allow_list', 'request_timeout'] as const;
/** A variable name: 1 to 256 characters, none `=` or a control character (POSIX names are a subset). */
const isEnvName = (name: string): boolean =>
  name.length <= 256 && ![...name].some((char) => char === '=' || char < ' ' || char === '\x7f');

/** The options' values, or the problems with them (each `<option>: <what is wrong>`). */
export function parseDockerOptions(options: Readonly<Record<string, string>>): DockerAttestorOptions | string[] {
  const problems: string[] = [];
  const socketName = options['docker_socket_path'] ?? DEFAULT_DOCKER_SOCKET;
  const socketPath = socketName.startsWith('unix://') ? socketName.slice('unix://'.length) : undefined;
  if (socketPath === undefined || !socketPath.startsWith('/') || !isSocketPath(socketPath)) {
    problems.push(
      `docker_socket_path: must be unix:// and an absolute Unix socket path (the agent talks to the Docker Engine ` +
        `only on its local socket), got ${JSON.stringify(socketName)}`,
    );
  }
  const apiVersion = options['docker_version'];
  if (apiVersion !== undefined && !DOCKER_API_VERSION.test(apiVersion)) {
    problems.push(
      `docker_version: must be a Docker Engine API version such as 1.44, got ${JSON.stringify(apiVersion)}`,
    );
  }
  const names = parseOptionList(options['env_allow_list'] ?? '');
  const badName = names.find((name) => !isEnvName(name));
  if (badName !== undefined) {
    problems.push(`env_allow_list: must be variable names separated by ;, got ${JSON.stringify(badName)}`);
  }
  let requestTimeoutMs = DEFAULT_DOCKER_REQUEST_TIMEOUT_MS;
  if (options['request_timeout'] !== undefined) {
    const parsed = parseOptionDurationMs(options['request_timeout'], 100, 60_000);
    if (typeof parsed === 'string') problems.push(`request_timeout: ${parsed}`);
    else requestTimeoutMs = parsed;
  }
  if (problems.length > 0) return problems;
  return { socketPath: socketPath!, socketName, apiVersion, envAllowList: new Set(names), requestTimeoutMs };
}

export interface DockerWorkloadAttestorDependencies {
  readonly logger?: Pick<ContextLogger, 'debug'>;
  /** Where the caller's container is read from (tests: a fixed answer). */
  readonly containerOf?: (pid: number) => Promise<ContainerIdentity | undefined>;
}

export class DockerWorkloadAttestor implements WorkloadAttestor {
  readonly type = DOCKER_ATTESTOR_TYPE;
  private readonly engine: DockerEngineClient;
  private readonly logger: Pick<ContextLogger, 'debug'>;
  private readonly containerOf: (pid: number) => Promise<ContainerIdentity | undefined>;

  constructor(
    private readonly options: DockerAttestorOptions,
    dependencies: DockerWorkloadAttestorDependencies = {},
  ) {
    this.engine = new DockerEngineClient({
      socketPath: options.socketPath,
      socketName: options.socketName,
      apiVersion: options.apiVersion,
      timeoutMs: options.requestTimeoutMs,
    });
    this.logger = dependencies.logger ?? new ContextLogger(DockerWorkloadAttestor.name);
    this.containerOf = dependencies.containerOf ?? ((pid) => readContainerIdentity(pid));
  }

  async attest(caller: WorkloadCaller, signal: AbortSignal): Promise<readonly Selector[]> {
    signal.throwIfAborted();
    let container: ContainerIdentity | undefined;
    try {
      container = await this.containerOf(caller.pid);
    } catch (error) {
      throw new WorkloadAttestationError((error as Error).message, { cause: error });
    }
    if (container === undefined) return [];
    let inspect: ContainerInspect | undefined;
    try {
      inspect = await this.engine.inspectContainer(container.containerId, signal);
    } catch (error) {
      if (signal.aborted) throw error;
      throw new WorkloadAttestationError(`process ${caller.pid}: ${(error as Error).message}`, { cause: error });
    }
    if (inspect === undefined) {
      this.logger.debug(
        `process ${caller.pid}: container ${container.containerId} is not one of the Docker Engine's at ` +
          `${this.options.socketName}: no docker selectors`,
      );
      return [];
    }
    return this.selectorsOf(inspect, caller.pid);
  }

  /** SPIRE's selectors of an inspected container; values that cannot be selectors are skipped (and logged). */
  private selectorsOf(inspect: ContainerInspect, pid: number): Selector[] {
    const values: { value: string; what: string }[] = [];
    const labels = inspect.Config?.Labels ?? {};
    for (const key of Object.keys(labels).sort()) {
      values.push({ value: `label:${key}:${labels[key]}`, what: `label ${JSON.stringify(key)}` });
    }
    if (inspect.Config?.Image) values.push({ value: `image_id:${inspect.Config.Image}`, what: 'image reference' });
    if (inspect.Image) values.push({ value: `image_config_digest:${inspect.Image}`, what: 'image ID' });
    for (const variable of inspect.Config?.Env ?? []) {
      const equals = variable.indexOf('=');
      const name = equals < 0 ? variable : variable.slice(0, equals);
      // Only allow-listed variables; the others (and their values, maybe secrets) are never looked at again.
      if (equals > 0 && this.options.envAllowList.has(name)) {
        values.push({ value: `env:${variable}`, what: `variable ${JSON.stringify(name)}` });
      }
    }
    const selectors: Selector[] = [];
    for (const { value, what } of values) {
      try {
        selectors.push(checkSelector({ type: this.type, value }));
      } catch (error) {
        if (!(error instanceof SelectorError)) throw error;
        // The rule, not the value: an allow-listed variable may still be a secret.
        this.logger.debug(`process ${pid}: the container's ${what} cannot be a selector, skipped (${error.message})`);
      }
    }
    return selectors;
  }
}

/** The registry's entry. */
export const DOCKER_ATTESTOR: WorkloadAttestorPlugin = Object.freeze({
  optionNames: OPTION_NAMES,
  checkOptions: (options: Readonly<Record<string, string>>) => {
    const parsed = parseDockerOptions(options);
    return Array.isArray(parsed) ? parsed : [];
  },
  create: ({ options }: WorkloadAttestorContext) => {
    const parsed = parseDockerOptions(options);
    if (Array.isArray(parsed)) throw new Error(`workload attestor docker: ${parsed.join('; ')}`);
    return new DockerWorkloadAttestor(parsed);
  },
});
