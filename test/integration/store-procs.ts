/**
 * Helpers for the store's multi-process tests and benchmark: the record specs the workers use, a
 * builder that bundles test/integration/store-writer.ts once (esbuild, ~0.1 s) so that each worker
 * starts as plain `node bundle.mjs` (~50 ms CPU instead of ~0.5 s through the tsx loader), and a
 * line-oriented handle on each spawned worker. Every process is killed by its PID at cleanup.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { z } from 'zod';

export const CounterSpec = { name: 'counters', version: 1, schema: z.strictObject({ n: z.number().int().min(0) }) };
export const OwnSpec = {
  name: 'endpoints',
  version: 1,
  schema: z.strictObject({ worker: z.number().int(), seq: z.number().int(), note: z.string() }),
};
export const BlobSpec = {
  name: 'blobs',
  version: 1,
  schema: z
    .strictObject({ writer: z.number().int(), seq: z.number().int(), len: z.number().int(), payload: z.string() })
    .refine((r) => r.payload.length === r.len && r.payload === String(r.seq % 10).repeat(r.len), 'payload does not match len/seq'),
};

const WORKER_TS = fileURLToPath(new URL('./store-writer.ts', import.meta.url));

/**
 * The command that starts a worker: `node BUNDLE` when esbuild is available (it comes with tsx),
 * else `node --import tsx store-writer.ts`.
 */
export async function workerCommand(outDir: string): Promise<{ readonly argv: readonly string[]; readonly how: string }> {
  try {
    const esbuild = await import('esbuild');
    const outfile = join(outDir, 'store-writer.mjs');
    await esbuild.build({
      entryPoints: [WORKER_TS],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      outfile,
      external: ['esbuild'],
      logLevel: 'silent',
    });
    return { argv: [process.execPath, outfile], how: 'esbuild bundle' };
  } catch {
    return { argv: [process.execPath, '--import', 'tsx', WORKER_TS], how: 'tsx loader (esbuild not importable)' };
  }
}

export interface Worker {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves with the first stdout line starting with `prefix` (seen before or after the call). */
  line(prefix: string, timeoutMs?: number): Promise<string>;
  send(line: string): void;
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>;
  stderr(): string;
}

export function startWorker(cmd: readonly string[], args: readonly string[], live: Set<Worker>): Worker {
  const [file = process.execPath, ...pre] = cmd;
  // A clean environment: no NODE_OPTIONS (tap's loaders) and no NODE_EXTRA_CA_CERTS, which would
  // each add tens of ms to every start.
  const child = spawn(file, [...pre, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    cwd: fileURLToPath(new URL('../..', import.meta.url)),
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C' },
  });
  const lines: string[] = [];
  const waiters: { prefix: string; resolve: (l: string) => void }[] = [];
  let err = '';
  let partial = '';
  child.stdout?.on('data', (d: Buffer) => {
    partial += d.toString();
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const l of parts) {
      lines.push(l);
      for (const w of [...waiters]) {
        if (l.startsWith(w.prefix)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(l);
        }
      }
    }
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  child.stdin?.on('error', () => undefined);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal })); // after stdout is drained
  });
  const w: Worker = {
    pid: child.pid ?? -1,
    child,
    exited,
    stderr: () => err,
    send: (l) => child.stdin?.write(`${l}\n`),
    line(prefix, timeoutMs = 30_000) {
      const seen = lines.find((l) => l.startsWith(prefix));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`worker ${w.pid}: no "${prefix}" line within ${timeoutMs} ms; stderr: ${err.slice(-2000)}`)), timeoutMs);
        const entry = {
          prefix,
          resolve: (l: string) => {
            clearTimeout(timer);
            resolve(l);
          },
        };
        waiters.push(entry);
        void exited.then(({ code, signal }) => {
          if (!waiters.includes(entry)) return;
          waiters.splice(waiters.indexOf(entry), 1);
          clearTimeout(timer);
          reject(new Error(`worker ${w.pid} exited (${String(code ?? signal)}) before "${prefix}"; stderr: ${err.slice(-2000)}`));
        });
      });
    },
  };
  live.add(w);
  void exited.then(() => live.delete(w));
  return w;
}

/** Kills (SIGKILL, by PID) every worker still running and waits for them. */
export async function killAll(live: Set<Worker>): Promise<void> {
  const all = [...live];
  for (const w of all) {
    try {
      process.kill(w.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await Promise.all(all.map((w) => w.exited));
}

/** Runs `n` workers with `args(i)`, waits for all "ready", releases them together; returns ms from go to all done. */
export async function runTogether(cmd: readonly string[], n: number, args: (i: number) => readonly string[], live: Set<Worker>): Promise<{ readonly ms: number; readonly done: string[] }> {
  const ws = Array.from({ length: n }, (_, i) => startWorker(cmd, args(i), live));
  await Promise.all(ws.map((w) => w.line('ready', 60_000)));
  const t0 = performance.now();
  for (const w of ws) w.send('go');
  const done = await Promise.all(ws.map((w) => w.line('done ', 120_000)));
  const ms = performance.now() - t0;
  const codes = await Promise.all(ws.map((w) => w.exited));
  const bad = codes.findIndex((c) => c.code !== 0);
  if (bad >= 0) throw new Error(`worker ${bad} exited ${JSON.stringify(codes[bad])}: ${ws[bad]?.stderr()}`);
  return { ms, done: done.map((l) => l.slice('done '.length)) };
}
