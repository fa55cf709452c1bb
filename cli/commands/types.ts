import { TsnetError } from '../../core/errors.js';
/** What a CLI command is: argv in, text out through `io`; failures are thrown TsnetErrors. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export interface Command {
  readonly summary: string;
  /** Resolves with an exit code for commands that have one of their own (run, exec); else 0. */
  run(argv: readonly string[], io: Io): Promise<number | void>;
}

/** The error of a multi-object command whose failures were already printed one per line. */
export function reported(err: unknown): TsnetError {
  const code = err instanceof TsnetError ? err.code : 'INTERNAL';
  return new TsnetError(code, err instanceof Error ? err.message : String(err), { cause: err, details: { reported: true } });
}
