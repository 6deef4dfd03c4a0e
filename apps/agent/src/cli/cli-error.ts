/** A failure the CLI reports as one line, `Error: <message>`, with a non-zero exit code. */
export class CliError extends Error {
  override readonly name = 'CliError';

  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}
