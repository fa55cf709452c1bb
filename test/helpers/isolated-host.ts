/**
 * The privileged test harness. Every privileged test and benchmark runs inside `withIsolatedHost`:
 * a fresh network namespace that plays "host" (loopback up, its own sysctls, an empty netfilter
 * ruleset), private run and state directories, and a namespace manager whose namespaces live under
 * that run directory. Everything is torn down afterwards, even when the test fails: processes the
 * test started (by PID), namespaces, directories.
 *
 * The whole test process must itself already be isolated (scripts/isolate.mjs: its own network and
 * mount namespaces, tmpfs on /run and /tmp). `assertIsolated` refuses to run otherwise, so a
 * mistake can never reach the machine's real network.
 */
import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { NetnsRef } from '../../core/net.js';
import { inNetns, run, spawnLongLived, type Argv, type LongLived, type RunOptions, type RunResult } from '../../sys/exec.js';
import { createNetnsManager, type NetnsManager } from '../../sys/netns.js';

export const isRoot = process.getuid?.() === 0;
export const skipUnlessRoot: string | false = isRoot ? false : 'needs root (real namespaces, bridges and firewall rules)';

/** Throws unless this process runs in a throwaway network namespace (never the machine's own). */
export function assertIsolated(): void {
  const mine = String(statSync('/proc/self/ns/net').ino);
  const outer = process.env['TSNET_OUTER_NETNS_INO'];
  if (process.env['TSNET_ISOLATED'] !== '1' || outer === undefined || mine === outer) {
    throw new Error('privileged tests must run isolated: use `npm test` (scripts/isolate.mjs) or `node scripts/isolate.mjs --enter -- tap FILE`');
  }
}

export interface IsolatedHost {
  /** The namespace playing "host" for this test. */
  readonly ns: NetnsRef;
  readonly name: string;
  readonly runDir: string;
  readonly stateDir: string;
  /** Namespaces for containers and neighbours, under `${runDir}/netns`. */
  readonly netns: NetnsManager;
  /** Runs argv in the host namespace. */
  exec(argv: Argv, opts?: RunOptions): Promise<RunResult>;
  /** Runs argv in namespace `ns`. */
  execIn(ns: NetnsRef, argv: Argv, opts?: RunOptions): Promise<RunResult>;
  /** A new namespace with loopback up, removed at teardown. */
  newNetns(prefix?: string): Promise<NetnsRef>;
  /** Starts a long-lived process in `ns`; killed (by PID) at teardown. */
  spawnIn(ns: NetnsRef, argv: Argv): LongLived;
  /** Runs `fn` at teardown (before namespaces are removed), in reverse order of registration. */
  defer(fn: () => Promise<unknown>): void;
}

const HARNESS_DIR = '/run/tsnet-test';

export async function withIsolatedHost<T>(fn: (host: IsolatedHost) => Promise<T>): Promise<T> {
  assertIsolated();
  const name = `h-${randomBytes(4).toString('hex')}`;
  const base = join(HARNESS_DIR, name);
  const runDir = join(base, 'run');
  const stateDir = join(base, 'state');
  await mkdir(runDir, { recursive: true });
  await mkdir(stateDir, { recursive: true });
  const hostsMgr = createNetnsManager(join(HARNESS_DIR, 'hosts'));
  const netns = createNetnsManager(join(runDir, 'netns'));
  const procs: LongLived[] = [];
  const deferred: (() => Promise<unknown>)[] = [];
  let hostNs: NetnsRef | undefined;
  let seq = 0;
  let failed = false;
  try {
    hostNs = await hostsMgr.create(name);
    const ns = hostNs;
    await run(inNetns(ns, ['ip', 'link', 'set', 'lo', 'up']));
    const host: IsolatedHost = {
      ns,
      name,
      runDir,
      stateDir,
      netns,
      exec: (argv, opts) => run(inNetns(ns, argv), opts),
      execIn: (target, argv, opts) => run(inNetns(target, argv), opts),
      async newNetns(prefix = 'ns') {
        const ref = await netns.create(`${prefix}-${++seq}-${randomBytes(2).toString('hex')}`);
        await run(inNetns(ref, ['ip', 'link', 'set', 'lo', 'up']));
        return ref;
      },
      spawnIn(target, argv) {
        const p = spawnLongLived(inNetns(target, argv));
        procs.push(p);
        return p;
      },
      defer(f) {
        deferred.push(f);
      },
    };
    return await fn(host);
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    for (const f of deferred.reverse()) await f().catch(() => undefined);
    for (const p of procs) {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
      await p.close(500);
    }
    for (const n of await netns.list().catch(() => [])) await netns.remove(n).catch(() => undefined);
    if (hostNs) await hostsMgr.remove(name).catch(() => undefined);
    await run(['umount', '--lazy', netns.dir]).catch(() => undefined); // the shared bind mount of the netns dir
    // Whatever else is still mounted under it (a dockerd that had to be killed leaves its
    // namespace files and overlay mounts): detached, deepest first, so the removal cannot hit EBUSY.
    const mounts = (await readFile('/proc/self/mountinfo', 'utf8').catch(() => '')).split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m === base || m.startsWith(`${base}/`));
    for (const m of [...new Set(mounts)].sort((a, b) => b.length - a.length)) await run(['umount', '--lazy', m]).catch(() => undefined);
    // A process that is still ending may write meanwhile (ENOTEMPTY): rm retries. A teardown error
    // never hides the run's own error.
    await rm(base, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }).catch((err: unknown) => {
      if (!failed) throw err;
    });
  }
}
