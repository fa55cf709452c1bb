/**
 * Container lifecycle through the `tsnet` binary (the C front end, served by the daemon that the
 * first `run` starts) vs Docker (Debian docker.io, its default options, busybox imported offline),
 * same isolated host, one user-defined network each:
 * - `run -d` at containers 1-10 and 991-1,000, tsnet and Docker interleaved one to one;
 * - at 1,000: `ps`, `network inspect`, `exec … true`, a foreground `run --rm … true`, the daemon's
 *   RSS and the DNS update per container (the resolver's reload after one container's change, as
 *   the daemon reports it), then `rm -f` of 10 containers one by one, interleaved.
 * The fill from 10 to 990 is untimed (4 at a time on each side). Every figure includes the client
 * process (tsnet's front end; the docker CLI) and the daemon's work.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cliFor, okCli } from '../test/helpers/cli.js';
import { IMAGE, importBusybox, startDockerd } from '../test/helpers/dockerd.js';
import type { IsolatedHost } from '../test/helpers/isolated-host.js';
import { stats, type BenchRow, type BenchSection } from './report.js';

interface DaemonStatus { readonly pid: number; readonly services: { readonly dns?: { readonly lastReloadMs?: number; readonly records?: number } } }

const timed = async (f: () => Promise<unknown>): Promise<number> => {
  const t0 = performance.now();
  await f();
  return performance.now() - t0;
};

/** `n` tasks, `width` at a time. */
async function inParallel(n: number, width: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) await task(next++);
  }));
}

const memAvailableMiB = async (): Promise<number> => Number(/MemAvailable:\s+(\d+)/.exec(await readFile('/proc/meminfo', 'utf8'))?.[1] ?? 0) / 1024;

export async function benchLifecycle(host: IsolatedHost, opts: { readonly total?: number; readonly window?: number } = {}): Promise<BenchSection> {
  const at = { phase: 'setup' };
  try {
    return await measure(host, opts, at);
  } catch (err) {
    throw new Error(`lifecycle bench, ${at.phase}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

async function measure(host: IsolatedHost, opts: { readonly total?: number; readonly window?: number }, at: { phase: string }): Promise<BenchSection> {
  const total = opts.total ?? 1000;
  const w = opts.window ?? 10;
  const ts = okCli(cliFor(host));
  const d = await startDockerd(host, { dockerBridge: true, plugin: false });
  await importBusybox(d, join(host.stateDir, 'image'));
  await ts('network', 'create', '--subnet', '10.81.0.0/16', 'lc');
  await d.ok('network', 'create', '--subnet', '10.82.0.0/16', 'dlc');
  host.defer(() => cliFor(host)('daemon', '--stop'));
  const tsRun = (i: number): Promise<string> => ts('run', '-d', '--name', `t${i}`, '--network', 'lc', '--', 'sleep', '3600');
  const dkRun = (i: number): Promise<string> => d.ok('run', '-d', '--name', `d${i}`, '--network', 'dlc', IMAGE, 'sleep', '3600');
  const status = async (): Promise<DaemonStatus> => JSON.parse(await ts('daemon', '--status')) as DaemonStatus;

  at.phase = 'first runs';
  // The very first run starts the daemon (cold); it is reported on its own, not in the window.
  const cold = await timed(() => tsRun(0));
  const dkFirst = await timed(() => dkRun(0));
  const first: Record<'ts' | 'dk', number[]> = { ts: [], dk: [] };
  for (let i = 1; i <= w; i++) {
    first.ts.push(await timed(() => tsRun(i)));
    first.dk.push(await timed(() => dkRun(i)));
  }
  at.phase = 'fill';
  // Fill to total - w (untimed); Docker stops early if memory runs short (noted).
  const fillTo = total - w;
  let dockerCount = w + 1;
  const fillStart = performance.now();
  await inParallel(fillTo - (w + 1), 4, (k) => tsRun(w + 1 + k));
  const tsFillMs = performance.now() - fillStart;
  let lowMemory = false;
  const dkFillStart = performance.now();
  await inParallel(fillTo - (w + 1), 4, async (k) => {
    if (lowMemory) return;
    if (k % 50 === 0 && (await memAvailableMiB()) < 3072) {
      lowMemory = true;
      return;
    }
    await dkRun(w + 1 + k);
    dockerCount++;
  });
  const dkFillMs = performance.now() - dkFillStart;
  at.phase = 'last runs';
  const last: Record<'ts' | 'dk', number[]> = { ts: [], dk: [] };
  const dnsMs: number[] = [];
  for (let i = fillTo; i < total; i++) {
    last.ts.push(await timed(() => tsRun(i)));
    const s = await status();
    if (s.services.dns?.lastReloadMs !== undefined) dnsMs.push(s.services.dns.lastReloadMs);
    if (!lowMemory) {
      last.dk.push(await timed(() => dkRun(i)));
      dockerCount++;
    }
  }
  const tsCount = (await ts('ps', '-q')).split('\n').filter(Boolean).length;
  const dkCount = (await d.ok('ps', '-q')).split('\n').filter(Boolean).length;

  at.phase = 'ps, inspect, exec, run --rm at the top';
  // At 1,000.
  const rounds = 5;
  const ps: Record<'ts' | 'dk', number[]> = { ts: [], dk: [] };
  const inspect: Record<'ts' | 'dk', number[]> = { ts: [], dk: [] };
  const exec: Record<'ts' | 'dk', number[]> = { ts: [], dk: [] };
  const runRm: Record<'ts' | 'dk', number[]> = { ts: [], dk: [] };
  for (let r = 0; r < rounds; r++) {
    ps.ts.push(await timed(() => ts('ps')));
    ps.dk.push(await timed(() => d.ok('ps')));
    inspect.ts.push(await timed(() => ts('network', 'inspect', 'lc')));
    inspect.dk.push(await timed(() => d.ok('network', 'inspect', 'dlc')));
  }
  for (let r = 0; r < w; r++) {
    exec.ts.push(await timed(() => ts('exec', 't1', 'true')));
    exec.dk.push(await timed(() => d.ok('exec', 'd1', 'true')));
    runRm.ts.push(await timed(() => ts('run', '--rm', '--network', 'lc', '--', 'true')));
    runRm.dk.push(await timed(() => d.ok('run', '--rm', '--network', 'dlc', IMAGE, 'true')));
  }
  const st = await status();
  const rssMiB = Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${st.pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;
  at.phase = 'rm -f';
  const rm: Record<'ts' | 'dk', number[]> = { ts: [], dk: [] };
  for (let i = total - w; i < total; i++) {
    rm.ts.push(await timed(() => ts('rm', '-f', `t${i}`)));
    if (!lowMemory) rm.dk.push(await timed(() => d.ok('rm', '-f', `d${i}`)));
  }
  const rest = Array.from({ length: total - w }, (_, i) => `t${i}`);
  const rmAllTs = await timed(async () => {
    for (let i = 0; i < rest.length; i += 200) await ts('rm', '-f', ...rest.slice(i, i + 200));
  });
  const rmAllDk = await timed(async () => {
    const ids = (await d.ok('ps', '-aq')).split('\n').filter(Boolean);
    for (let i = 0; i < ids.length; i += 200) await d.ok('rm', '-f', ...ids.slice(i, i + 200));
  });
  const left = (await ts('ps', '-aq')).trim();

  at.phase = 'report';
  const m = (xs: readonly number[]): number => stats(xs).median;
  const vs = (name: string, mine: readonly number[], theirs: readonly number[], goal?: { readonly x: number }): BenchRow => ({
    name, value: m(mine), unit: 'ms',
    ...(theirs.length > 0 ? { baseline: { name: 'Docker', value: m(theirs) } } : {}),
    ...(goal !== undefined ? { goal: `<= ${goal.x}x Docker's`, met: theirs.length > 0 && m(mine) <= goal.x * m(theirs) } : {}),
  });
  const flat = m(last.ts) / m(first.ts);
  return {
    title: `Container lifecycle: the tsnet binary vs Docker ${await d.ok('version', '--format', '{{.Server.Version}}')} (busybox), one network each, up to ${total} containers`,
    rows: [
      vs(`run -d, median of containers 1-${w}`, first.ts, first.dk, { x: 0.3 }),
      vs(`run -d, median of containers ${fillTo + 1}-${total}`, last.ts, last.dk, { x: 0.3 }),
      { name: `flatness: run -d median at ${fillTo + 1}-${total} / at 1-${w}`, value: flat, unit: 'x', ...(last.dk.length > 0 ? { baseline: { name: 'Docker', value: m(last.dk) / m(first.dk) } } : {}), goal: '<= 1.2x', met: flat <= 1.2 },
      { name: `ps at ${tsCount} containers, median of ${rounds}`, value: m(ps.ts), unit: 'ms', baseline: { name: `Docker at ${dkCount}`, value: m(ps.dk) }, goal: '<= 100 ms', met: m(ps.ts) <= 100 },
      vs(`network inspect at ${tsCount} containers, median of ${rounds}`, inspect.ts, inspect.dk),
      vs(`rm -f (one container at ~${total}), median of ${w}`, rm.ts, rm.dk, { x: 0.5 }),
      vs(`run --rm … true in the foreground, median of ${w}`, runRm.ts, runRm.dk),
      { name: `exec … true, median of ${w}`, value: m(exec.ts), unit: 'ms', baseline: { name: 'Docker', value: m(exec.dk) }, goal: '<= 50 ms', met: m(exec.ts) <= 50 },
      { name: `daemon RSS at ${tsCount} endpoints`, value: rssMiB, unit: 'MiB', goal: '<= 80 MiB', met: rssMiB <= 80 },
      { name: `DNS update per container at ${fillTo + 1}-${total} (the resolver's reload, median)`, value: m(dnsMs), unit: 'ms', goal: '<= 5 ms', met: m(dnsMs) <= 5 },
      { name: 'containers left after rm -f of all', value: left === '' ? 0 : left.split('\n').length, unit: 'count', goal: '0', met: left === '' },
    ],
    notes: [
      `cold first run -d (starts the daemon): tsnet ${cold.toFixed(0)} ms; Docker's first run -d ${dkFirst.toFixed(0)} ms (dockerd already running)`,
      `fill ${w + 1}-${fillTo}, 4 at a time, untimed in the rows: tsnet ${(tsFillMs / 1000).toFixed(1)} s, Docker ${(dkFillMs / 1000).toFixed(1)} s${lowMemory ? ` (Docker stopped at ${dockerCount} containers: less than 3 GiB of memory left)` : ''}`,
      `p95: tsnet run -d ${stats(first.ts).p95.toFixed(1)} / ${stats(last.ts).p95.toFixed(1)} ms, Docker ${stats(first.dk).p95.toFixed(1)} / ${stats(last.dk).p95.toFixed(1)} ms; DNS reload p95 ${stats(dnsMs).p95.toFixed(2)} ms over ${st.services.dns?.records ?? '?'} records`,
      `rm -f of the rest in commands of 200: tsnet ${(rmAllTs / 1000).toFixed(1)} s for ${total - w}; Docker ${(rmAllDk / 1000).toFixed(1)} s`,
    ],
  };
}
