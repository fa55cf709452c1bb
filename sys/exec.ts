/**
 * The one place tsnet starts processes. argv arrays only, never a shell; a fixed PATH and LC_ALL=C;
 * every call has a timeout and may take an AbortSignal. A failure becomes a TsnetError carrying the
 * argv, the exit code and stderr in `details`; adapters turn stderr into a precise code.
 */
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { join } from 'node:path';
import { TsnetError } from '../core/errors.js';
import type { NetnsRef } from '../core/net.js';
import type { Argv, ExecFailureDetails, RunOptions, RunResult, SpawnDetachedOptions } from './api.js';

export type { Argv, ExecFailureDetails, RunOptions, RunResult };

export const SAFE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const DEFAULT_TIMEOUT_MS = 30_000;
const MAX_BUFFER = 256 * 1024 * 1024;

function childEnv(extra?: Readonly<Record<string, string>>): NodeJS.ProcessEnv {
  return { PATH: SAFE_PATH, LC_ALL: 'C', ...extra };
}

/** Runs argv to completion. Rejects with a TsnetError (UNAVAILABLE if the binary is missing). */
export function run(argv: Argv, opts: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv;
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      {
        shell: false,
        env: childEnv(opts.env),
        timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        killSignal: 'SIGKILL',
        maxBuffer: MAX_BUFFER,
        encoding: 'utf8',
        ...(opts.signal ? { signal: opts.signal } : {}),
      },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ stdout, stderr });
          return;
        }
        const e = err as NodeJS.ErrnoException & { code?: unknown; killed?: boolean; signal?: string | null };
        const details: ExecFailureDetails = {
          argv,
          exitCode: typeof e.code === 'number' ? e.code : null,
          signal: e.signal ?? null,
          stderr: String(stderr ?? ''),
          stdout: String(stdout ?? ''),
        };
        if (e.code === 'ENOENT') {
          reject(new TsnetError('UNAVAILABLE', `${file}: not installed or not on PATH (${SAFE_PATH})`, { cause: err, details: { ...details, missingBinary: true } }));
          return;
        }
        if (e.name === 'AbortError') {
          reject(new TsnetError('UNAVAILABLE', `${argv.join(' ')}: aborted`, { cause: err, details }));
          return;
        }
        if (e.killed === true || e.signal) {
          reject(new TsnetError('UNAVAILABLE', `${argv.join(' ')}: killed by ${e.signal ?? 'timeout'} (timeout ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms)`, { cause: err, details }));
          return;
        }
        const msg = details.stderr.trim().split('\n').filter(Boolean).slice(-3).join('; ') || `exit code ${String(details.exitCode)}`;
        reject(new TsnetError('INTERNAL', `${argv.join(' ')}: ${msg}`, { cause: err, details }));
      },
    );
    if (opts.input !== undefined) {
      child.stdin?.on('error', () => undefined); // EPIPE when the child exits early; reported via exit code
      child.stdin?.end(opts.input);
    }
  });
}

/** Typed access to an exec failure's details, for adapters that map stderr to codes. */
export function execDetails(err: unknown): ExecFailureDetails | undefined {
  if (!(err instanceof TsnetError)) return undefined;
  const d = err.details as Partial<ExecFailureDetails>;
  return Array.isArray(d.argv) ? (d as ExecFailureDetails) : undefined;
}

/** A long-lived child with piped stdio (for `ip -batch -`, `nft -i`, daemons). */
export interface LongLived {
  readonly pid: number;
  readonly child: ChildProcessWithoutNullStreams;
  /** Ends stdin and waits for exit; kills after `graceMs`. */
  close(graceMs?: number): Promise<void>;
}

export function spawnLongLived(argv: Argv, opts: { readonly env?: Readonly<Record<string, string>> } = {}): LongLived {
  const [file, ...args] = argv;
  const child = spawn(file, args, { shell: false, env: childEnv(opts.env), stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.on('error', () => undefined);
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  return {
    pid: child.pid ?? -1,
    child,
    async close(graceMs = 2_000) {
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Detached background process (daemons); returns its pid. stdio goes to the given fds or is ignored. */
export function spawnDetached(argv: Argv, opts: SpawnDetachedOptions = {}): number {
  const [file, ...args] = argv;
  const child = spawn(file, args, {
    shell: false,
    env: childEnv(opts.env),
    detached: true,
    stdio: opts.stdio ? [...opts.stdio] : 'ignore',
  });
  child.unref();
  return child.pid ?? -1;
}

/** Prefixes argv so it runs inside `ns` (no-op for the process's own namespace). */
export function inNetns(ns: NetnsRef, argv: Argv): Argv {
  return ns.kind === 'host' ? argv : ['nsenter', `--net=${ns.path}`, '--', ...argv];
}

/** The first `dir/name` of `dirs` that is an executable file (a CNI_PATH lookup), or undefined. */
export async function findExecutable(name: string, dirs: readonly string[]): Promise<string | undefined> {
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}
