import { describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../../config.js';
import { K8sOptionsError, parseK8sOptions } from './k8s-options.js';

describe('parseK8sOptions', () => {
  it("takes SPIRE's defaults, the node name from MY_NODE_NAME, and dials the node name", () => {
    expect(parseK8sOptions({}, { MY_NODE_NAME: 'node-1.cluster.local' })).toEqual({
      kubeletHost: 'node-1.cluster.local',
      kubeletPort: 10250,
      nodeName: 'node-1.cluster.local',
      kubeletCaPath: '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt',
      skipKubeletVerification: false,
      tokenPath: '/var/run/secrets/kubernetes.io/serviceaccount/token',
      maxPollAttempts: 60,
      pollRetryIntervalMs: 500,
      disableContainerSelectors: false,
      podLevelFallback: false,
    });
  });

  it('dials 127.0.0.1 and checks no name without a node name, as SPIRE', () => {
    const settings = parseK8sOptions({}, {});
    expect(settings.kubeletHost).toBe('127.0.0.1');
    expect(settings.nodeName).toBeUndefined();
  });

  it('prefers node_name, then the variable node_name_env names; kubelet_host changes only the address', () => {
    const env = { MY_NODE_NAME: 'from-default-env', NODE: 'from-env' };
    expect(parseK8sOptions({ node_name: 'given', node_name_env: 'NODE' }, env).nodeName).toBe('given');
    expect(parseK8sOptions({ node_name_env: 'NODE' }, env).nodeName).toBe('from-env');
    const settings = parseK8sOptions({ kubelet_host: '127.0.0.1', node_name: 'node-1' }, {});
    expect(settings).toMatchObject({ kubeletHost: '127.0.0.1', nodeName: 'node-1' });
  });

  it('reads every option', () => {
    const settings = parseK8sOptions(
      {
        kubelet_secure_port: '10443',
        kubelet_ca_path: '/etc/kubelet/ca.pem',
        token_path: '/run/token',
        max_poll_attempts: '5',
        poll_retry_interval: '250ms',
        disable_container_selectors: 'true',
        pod_level_fallback: 'true',
      },
      {},
    );
    expect(settings).toMatchObject({
      kubeletPort: 10443,
      kubeletCaPath: '/etc/kubelet/ca.pem',
      tokenPath: '/run/token',
      maxPollAttempts: 5,
      pollRetryIntervalMs: 250,
      disableContainerSelectors: true,
      podLevelFallback: true,
    });
    expect(parseK8sOptions({ skip_kubelet_verification: 'true' }, {}).skipKubeletVerification).toBe(true);
  });

  it.each([
    [{ kubelet_secure_port: '0' }, 'kubelet_secure_port: must be a whole number from 1 to 65535, got "0"'],
    [{ max_poll_attempts: 'many' }, 'max_poll_attempts: must be a whole number from 1 to 10000'],
    [{ poll_retry_interval: '1ms' }, 'poll_retry_interval: must be from 10ms to 1m, got "1ms"'],
    [{ poll_retry_interval: 'soon' }, 'poll_retry_interval: must be a duration'],
    [{ skip_kubelet_verification: 'yes' }, 'skip_kubelet_verification: must be true or false, got "yes"'],
    [{ node_name: 'bad_name' }, 'node_name: must be a host name or an IP address'],
    [{ kubelet_host: '*.example.org' }, 'kubelet_host: must be a host name or an IP address'],
    [{ node_name_env: 'MY-NODE' }, 'node_name_env: must be an environment variable name, got "MY-NODE"'],
    [{ token_path: ' ' }, 'token_path: must be a file path'],
    [
      { skip_kubelet_verification: 'true', kubelet_ca_path: '/ca.pem' },
      'kubelet_ca_path: cannot be used with skip_kubelet_verification=true',
    ],
  ])('refuses %j', (options, message) => {
    expect(() => parseK8sOptions(options, {})).toThrow(K8sOptionsError);
    expect(() => parseK8sOptions(options, {})).toThrow(message);
  });

  it('checks a node name from the environment, naming the variable', () => {
    expect(() => parseK8sOptions({}, { MY_NODE_NAME: 'node 1' })).toThrow(
      'node_name_env: the node name in MY_NODE_NAME must be a host name or an IP address',
    );
  });

  it('lists every bad option at once', () => {
    expect(() => parseK8sOptions({ kubelet_secure_port: 'x', max_poll_attempts: '0' }, {})).toThrow(
      /kubelet_secure_port: .*; max_poll_attempts: /,
    );
  });
});

describe('--workload-attestor k8s:… in the agent configuration', () => {
  const load = (...attestors: string[]) =>
    loadAgentConfig({
      flags: {
        serverAddress: ['127.0.0.1:8081'],
        insecureBootstrap: true,
        trustDomain: 'example.org',
        workloadAttestor: attestors,
      },
    });

  it('enables the k8s attestor with its options', () => {
    expect(load('unix', 'k8s:node_name=node-1,poll_retry_interval=250ms').workloadAttestors).toEqual([
      { type: 'unix', options: {} },
      { type: 'k8s', options: { node_name: 'node-1', poll_retry_interval: '250ms' } },
    ]);
  });

  it('refuses an unknown option and a bad value when the configuration loads, naming them', () => {
    expect(() => load('k8s:kubelet_port=1')).toThrow(
      /--workload-attestor: k8s: unknown option "kubelet_port" \(known: kubelet_secure_port,/,
    );
    expect(() => load('k8s:max_poll_attempts=0,skip_kubelet_verification=yes')).toThrow(
      /--workload-attestor: k8s: max_poll_attempts: must be a whole number from 1 to 10000, got "0"; --workload-attestor: k8s: skip_kubelet_verification: must be true or false, got "yes"/,
    );
  });
});
