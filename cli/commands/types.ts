import { TsnetError } from '../../core/errors.js';
import type { TermSize } from '../../sys/api.js';

/** The client's terminal, when stdin is one. */
export interface Terminal {
  /** Raw mode: keys (Ctrl-C included) go to the container's terminal, not to this process. */
  setRaw(on: boolean): void;
  /** stdout's size, when it is a terminal. */
  size(): TermSize | undefined;
  /** Calls `f` with the new size when the window changes (SIGWINCH); returns an unsubscribe. */
  onResize(f: (size: TermSize) => void): () => void;
}

/** What a CLI command is: argv in, text out through `io`; failures are thrown TsnetErrors. */
export interface Io {
  out(text: string | Uint8Array): void;
  err(text: string | Uint8Array): void;
  /** The client's environment (`-e VAR` takes its value from here). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** The client's working directory. */
  readonly cwd?: string;
  /** The client's stdin (`-i`). */
  readonly stdin?: NodeJS.ReadableStream;
  /** Present when stdin is a terminal. */
  readonly terminal?: Terminal;
  /** Handles signals sent to this process (instead of dying of them); returns an unsubscribe. */
  readonly onSignal?: (signals: readonly NodeJS.Signals[], f: (signal: NodeJS.Signals) => void) => () => void;
  /** Aborted when the client is gone (a command served by the daemon whose front end hung up). */
  readonly signal?: AbortSignal;
  /** The client process, when it is not this one (a command served by the daemon). */
  readonly client?: { readonly pid: number; readonly startTime: string };
}

export interface Command {
  readonly summary: string;
  /**
   * Whether the command must run in the client's own process (it reads the client's stdin or
   * terminal, or it is a long-lived process of its own); otherwise the daemon may serve it.
   */
  readonly local?: (argv: readonly string[]) => boolean;
  /** Resolves with an exit code for commands that have one of their own (run, exec); else 0. */
  run(argv: readonly string[], io: Io): Promise<number | void>;
}

/** The error of a multi-object command whose failures were already printed one per line. */
export function reported(err: unknown): TsnetError {
  const code = err instanceof TsnetError ? err.code : 'INTERNAL';
  return new TsnetError(code, err instanceof Error ? err.message : String(err), { cause: err, details: { reported: true } });
}

/** How many objects of one multi-object command are worked on at once (Docker's CLI works on all at once). */
export const EACH_REF_PARALLEL = 8;

/**
 * Docker's way with several objects: each is tried, each failure printed on its own line, and the
 * command fails with the first error (in argument order) once all were tried. Up to
 * EACH_REF_PARALLEL at once; `fn` prints its own success line on the `io` it is given, and every
 * object's lines come out in argument order. The same object named twice is worked on once at a
 * time.
 */
export async function eachRef(refs: readonly string[], io: Io, fn: (ref: string, io: Io) => Promise<void>): Promise<void> {
  type Line = { readonly err: boolean; readonly text: string | Uint8Array };
  const results: { lines: Line[]; error?: unknown; done: boolean }[] = refs.map(() => ({ lines: [], done: false }));
  let flushed = 0;
  const flush = (): void => {
    for (; flushed < refs.length && results[flushed]?.done === true; flushed++) {
      const r = results[flushed] as (typeof results)[number];
      for (const l of r.lines) (l.err ? io.err : io.out).call(io, l.text);
      if (r.error !== undefined) io.err(`Error: ${r.error instanceof Error ? r.error.message : String(r.error)}\n`);
    }
  };
  const busy = new Map<string, Promise<void>>();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < refs.length) {
      const i = next++;
      const ref = refs[i] as string;
      const r = results[i] as (typeof results)[number];
      const mine: Io = { ...io, out: (text) => void r.lines.push({ err: false, text }), err: (text) => void r.lines.push({ err: true, text }) };
      const before = busy.get(ref);
      const run = (async () => {
        if (before !== undefined) await before;
        try {
          await fn(ref, mine);
        } catch (err) {
          r.error = err;
        }
      })();
      busy.set(ref, run);
      await run;
      if (busy.get(ref) === run) busy.delete(ref);
      r.done = true;
      flush();
    }
  };
  await Promise.all(Array.from({ length: Math.min(EACH_REF_PARALLEL, refs.length) }, worker));
  const first = results.find((r) => r.error !== undefined)?.error;
  if (first !== undefined) throw reported(first);
}
