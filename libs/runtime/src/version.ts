/** Sigil's release version: `--version` of both CLIs and the `sigil_build_info` / `sigil_agent_build_info` metrics. */
export const SIGIL_VERSION = '0.1.0';
