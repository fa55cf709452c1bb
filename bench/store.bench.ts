/**
 * Store benchmark: the cross-process lock (abstract unix socket, sys/store/lock.ts) against the
 * alternative the design considered, util-linux flock(1) spawned as the holder of each acquisition
 * (`stdbuf -oL flock --verbose FILE cat`; acquisition is read from its stdout, release = end its
 * stdin), measured in the same run:
 *   - acquire+release, uncontended, in one process;
 *   - 50 processes released together, each doing N x (lock; read+write a counter file; unlock);
 *   - a holder killed with SIGKILL: time until its waiter holds the lock;
 * plus the latency of the store's own operations (put/update/get with fsync, reserve).
 *
 * No root needed. Run alone: npx tsx bench/store.bench.ts [N]
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { openFsStore } from '../sys/store/fs.js';
import { killAll, runTogether, startWorker, workerCommand, type Worker } from '../test/integration/store-procs.js';
import { formatSection, sample, stats, type BenchRow, type BenchSection } from './report.js';

async function flockOnce(file: string): Promise<void> {
  const c = spawn('stdbuf', ['-oL', 'flock', '--verbose', file, 'cat'], { stdio: ['pipe', 'pipe', 'ignore'], env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' } });
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  let buf = '';
  await new Promise<void>((resolve, reject) => {
    c.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes('executing')) resolve();
    });
    c.once('error', reject);
  });
  c.stdin.end();
  await exited;
}

export async function benchStore(opts: { readonly n?: number; readonly procs?: number; readonly perProc?: number } = {}): Promise<BenchSection> {
  const N = opts.n ?? 200;
  const PROCS = opts.procs ?? 50;
  const PER = opts.perProc ?? 20;
  const live = new Set<Worker>();
  const dirs: string[] = [];
  const tempDir = async (): Promise<string> => {
    const d = await mkdtemp(join(tmpdir(), 'tsnet-bench-store-'));
    dirs.push(d);
    return d;
  };
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  try {
    const dir = await tempDir();
    const store = await openFsStore({ dir });

    // 1. Uncontended acquire+release.
    const sock = stats(await sample(N, () => store.withLock('bench', async () => undefined)));
    const flk = stats(await sample(Math.min(N, 100), () => flockOnce(join(dir, 'bench.flock'))));
    rows.push({ name: 'lock acquire+release, uncontended (median)', value: sock.median, unit: 'ms', baseline: { name: 'flock(1) child', value: flk.median }, goal: '<= 1 ms', met: sock.median <= 1 });
    rows.push({ name: 'lock acquire+release, uncontended (p95)', value: sock.p95, unit: 'ms', baseline: { name: 'flock(1) child', value: flk.p95 } });

    // 2. 50 contending processes.
    const build = await workerCommand(await tempDir());
    notes.push(`workers: ${build.how}; ${PROCS} processes x ${PER} lock+read+write+unlock each, released together after all started`);
    const contended = async (impl: 'socket' | 'flock'): Promise<number> => {
      const d = await tempDir();
      const { ms } = await runTogether(build.argv, PROCS, () => ['lockbench', d, impl, String(PER)], live);
      const count = Number(await readFile(join(d, 'bench-counter'), 'utf8'));
      if (count !== PROCS * PER) throw new Error(`${impl}: counter ${count}, expected ${PROCS * PER}: lost updates`);
      return ms;
    };
    const sockMs = await contended('socket');
    const flockMs = await contended('flock');
    const ops = PROCS * PER;
    rows.push({ name: `${PROCS} processes x ${PER} locked increments: throughput`, value: (ops / sockMs) * 1000, unit: 'ops/s', baseline: { name: 'flock(1) child', value: (ops / flockMs) * 1000 } });
    rows.push({ name: `${PROCS} processes x ${PER} locked increments: wall time`, value: sockMs, unit: 'ms', baseline: { name: 'flock(1) child', value: flockMs } });

    // 3. SIGKILLed holder -> waiter.
    const lat: number[] = [];
    for (let i = 0; i < 5; i++) {
      const a = startWorker(build.argv, ['hold', dir, 'killme'], live);
      await a.line('held');
      const b = startWorker(build.argv, ['wait', dir, 'killme'], live);
      await b.line('waiting');
      await new Promise((r) => setTimeout(r, 200));
      const t0 = performance.timeOrigin + performance.now();
      process.kill(a.pid, 'SIGKILL');
      const line = await b.line('acquired', 10_000);
      lat.push(Number(line.split(' ')[1]) - t0);
      await Promise.all([a.exited, b.exited]);
    }
    const kill = stats(lat);
    rows.push({ name: 'holder SIGKILLed -> waiter holds the lock (median of 5)', value: kill.median, unit: 'ms', goal: '<= 200 ms', met: kill.median <= 200 });
    rows.push({ name: 'holder SIGKILLed -> waiter holds the lock (max of 5)', value: Math.max(...lat), unit: 'ms' });

    // 4. Store operations (fsync included: temp + write + fsync + rename + fsync dir).
    const coll = store.collection({ name: 'bench', version: 1, schema: z.strictObject({ n: z.number() }) });
    const put = stats(await sample(N, (i) => coll.put(`r${i + 10}`, { n: i })));
    const upd = stats(await sample(N, () => coll.update('r10', (c) => ({ n: c.n + 1 }))));
    const get = stats(await sample(N, (i) => coll.get(`r${Math.abs(i) + 10}`)));
    const pool = store.reservations('bench');
    const res = stats(await sample(N, (i) => pool.reserve(`10.0.${Math.floor((i + 3) / 250)}.${((i + 3) % 250) + 1}`, 'bench')));
    const list = stats(await sample(20, () => coll.list()));
    rows.push({ name: 'put (atomic, fsync) median', value: put.median, unit: 'ms' });
    rows.push({ name: 'update (lock + read + atomic write) median', value: upd.median, unit: 'ms' });
    rows.push({ name: 'get median', value: get.median, unit: 'ms' });
    rows.push({ name: 'reserve (O_EXCL create + fsync) median', value: res.median, unit: 'ms' });
    rows.push({ name: `list of ${N + 3} records median`, value: list.median, unit: 'ms' });
    notes.push(`state directory on ${tmpdir()} (fsync cost depends on its file system)`);
    return { title: 'store: records and cross-process locks', rows, notes };
  } finally {
    await killAll(live);
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const section = await benchStore({ n: Number(process.argv[2] ?? 200) });
  process.stdout.write(`${formatSection(section)}\n`);
}
