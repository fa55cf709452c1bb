/**
 * The container supervisor ("shim"): `node shim-main.js CONTAINER_DIR`, started detached by the
 * runtime, one per container. It creates the container's namespaces (see shim-plan.ts), starts its
 * process, copies its stdout/stderr to the log files, and records each phase in
 * CONTAINER_DIR/state.json (atomically: temp file + rename): starting → running (host PID of the
 * container's PID 1, with its start time) → exited (exit code), or failed (why).
 *
 * It is an entry point (a composition root): it wires sys/exec.ts itself. To start fast it loads
 * no schema library: spec.json was written, after validation, by the runtime, in a root-only
 * directory (zod would add ~60 ms to every container start unbundled, ~10 ms bundled).
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { lstat, mkdir, open, readFile, readlink, rename, stat, truncate, writeFile } from 'node:fs/promises';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { run, spawnLongLived, type LongLived } from '../sys/exec.js';
import { readProcStat } from './proc-stat.js';
import {
  UNSHARE_SIGKILL_MESSAGE, containerArgv, exitCodeOf, fstabText, hostnameArgv, mountArgv, rootfsMountPoints, setupFailure, waiterArgv,
  type MountPoint,
} from './shim-plan.js';
import type { ShimSpec, ShimState } from './spec.js';

const STEP_TIMEOUT_MS = 10_000;
const dir = process.argv[2];

let state: ShimState | undefined;
let waiter: LongLived | undefined;
let container: LongLived | undefined;

async function writeState(next: ShimState, path: string): Promise<void> {
  state = next;
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(next)}\n`, { mode: 0o600 });
  await rename(tmp, path);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Creates a mount point inside the rootfs, refusing symlinks (they would resolve on the host). */
async function ensureMountPoint(rootfs: string, mp: MountPoint): Promise<void> {
  const rel = mp.path.slice(rootfs.replace(/\/+$/, '').length).split('/').filter(Boolean);
  let cur = rootfs.replace(/\/+$/, '');
  for (const [i, part] of rel.entries()) {
    cur = `${cur}/${part}`;
    const last = i === rel.length - 1;
    const st = await lstat(cur).catch(() => undefined);
    if (st?.isSymbolicLink()) throw new Error(`rootfs: ${cur} is a symlink; cannot mount over it safely`);
    if (st !== undefined) continue;
    if (last && mp.kind === 'file') await (await open(cur, 'a', 0o644)).close();
    else await mkdir(cur, { mode: 0o755 });
  }
}

/** Resolves with the waiter's pid once `cat` echoes (its namespaces exist). */
function startWaiter(spec: ShimSpec): Promise<LongLived> {
  const w = spawnLongLived(waiterArgv(spec));
  waiter = w;
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`namespace holder did not start within ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
    w.child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    w.child.stdout.once('data', () => {
      clearTimeout(timer);
      resolve(w);
    });
    w.child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    w.child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`unshare exited ${String(code)}: ${err.trim()}`));
    });
    w.child.stdin.write('ready\n');
  });
}

/** Waits until unshare's forked child has exec'd the container's command; undefined if unshare exits first. */
async function findContainerPid(unsharePid: number, exited: () => boolean): Promise<number | undefined> {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  let unshareExe: string | undefined;
  while (Date.now() < deadline && !exited()) {
    const children = await readFile(`/proc/${unsharePid}/task/${unsharePid}/children`, 'utf8').catch(() => '');
    const pid = Number(children.trim().split(' ')[0]);
    if (Number.isInteger(pid) && pid > 0) {
      unshareExe ??= await readlink(`/proc/${unsharePid}/exe`).catch(() => undefined);
      const exe = await readlink(`/proc/${pid}/exe`).catch(() => undefined);
      if (exe !== undefined && exe !== unshareExe) return pid;
    }
    await sleep(1);
  }
  if (exited()) return undefined;
  throw new Error(`container process did not start within ${STEP_TIMEOUT_MS} ms`);
}

function finished(s: WriteStream): Promise<void> {
  return new Promise((resolve) => {
    s.end(() => resolve());
  });
}

async function main(): Promise<void> {
  if (dir === undefined || !dir.startsWith('/')) throw new Error('usage: shim-main.js CONTAINER_DIR');
  const spec = JSON.parse(await readFile(join(dir, 'spec.json'), 'utf8')) as ShimSpec;
  if (spec.schemaVersion !== 1) throw new Error(`spec.json: unsupported schemaVersion ${String(spec.schemaVersion)}`);
  const statePath = spec.paths.state;
  const self = await readProcStat(process.pid);
  const base: ShimState = {
    phase: 'starting', shimPid: process.pid, shimStartTime: self?.startTime ?? '0',
    pid: null, pidStartTime: null, startedAt: null, finishedAt: null, exitCode: null, error: null,
  };
  await writeState(base, statePath);

  try {
    if (spec.rootfs !== null) {
      if (!(await stat(spec.rootfs)).isDirectory()) throw new Error(`rootfs ${spec.rootfs} is not a directory`);
      for (const mp of rootfsMountPoints(spec)) await ensureMountPoint(spec.rootfs, mp);
    }
    const fstab = fstabText(spec);
    if (fstab !== '') await writeFile(spec.paths.fstab, fstab, { mode: 0o600 });

    const w = await startWaiter(spec);
    // Never touch the host's hostname or mounts: the waiter must be in namespaces of its own.
    for (const ns of ['uts', 'mnt', 'ipc']) {
      const [theirs, mine] = await Promise.all([readlink(`/proc/${w.pid}/ns/${ns}`), readlink(`/proc/self/ns/${ns}`)]);
      if (theirs === mine) throw new Error(`namespace holder ${w.pid} shares our ${ns} namespace`);
    }
    const mount = mountArgv(spec, w.pid);
    await Promise.all([
      run(hostnameArgv(spec, w.pid), { timeoutMs: STEP_TIMEOUT_MS }),
      mount === undefined ? undefined : run(mount, { timeoutMs: STEP_TIMEOUT_MS }),
    ]);

    await mkdir(dirname(spec.paths.stdout), { recursive: true });
    const out = createWriteStream(spec.paths.stdout, { flags: 'a', mode: 0o600 });
    const err = createWriteStream(spec.paths.stderr, { flags: 'a', mode: 0o600 });
    const c = spawnLongLived(containerArgv(spec, w.pid));
    container = c;
    c.child.stdin.end();
    let errTail = '';
    c.child.stdout.pipe(out, { end: false });
    c.child.stderr.on('data', (d: Buffer) => {
      errTail = (errTail + d.toString('latin1')).slice(-UNSHARE_SIGKILL_MESSAGE.length);
    });
    c.child.stderr.pipe(err, { end: false });
    let done = false;
    c.child.once('exit', () => {
      done = true;
    });
    const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      c.child.once('error', (e) => {
        done = true;
        reject(e);
      });
      c.child.once('close', (code, signal) => resolve({ code, signal }));
    });
    closed.catch(() => undefined);

    const pid = await findContainerPid(c.pid, () => done);
    const startedAt = new Date().toISOString();
    const pidStartTime = pid === undefined ? undefined : (await readProcStat(pid))?.startTime;
    if (pid !== undefined && pidStartTime !== undefined) {
      await writeState({ ...base, phase: 'running', pid, pidStartTime, startedAt }, statePath);
    }
    await w.close(STEP_TIMEOUT_MS); // the container holds its namespaces now

    const { code, signal } = await closed;
    await Promise.all([finished(out), finished(err)]);
    let exitCode = exitCodeOf(code, signal === null ? undefined : constants.signals[signal]);
    if (code === 1 && errTail === UNSHARE_SIGKILL_MESSAGE) {
      exitCode = 137;
      const size = (await stat(spec.paths.stderr)).size;
      await truncate(spec.paths.stderr, Math.max(0, size - UNSHARE_SIGKILL_MESSAGE.length));
    }
    if (pid === undefined && exitCode !== 0) {
      const fh = await open(spec.paths.stderr, 'r');
      const head = Buffer.alloc(4096);
      const { bytesRead } = await fh.read(head, 0, head.length, 0).finally(() => fh.close());
      const why = setupFailure(head.subarray(0, bytesRead).toString());
      if (why !== undefined) throw new Error(why);
    }
    await writeState({
      ...base, phase: 'exited', pid: pid ?? null, pidStartTime: pidStartTime ?? null, startedAt,
      finishedAt: new Date().toISOString(), exitCode,
    }, statePath);
  } catch (e) {
    for (const p of [container, waiter]) {
      if (p !== undefined && p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    }
    await writeState({ ...(state ?? base), phase: 'failed', error: e instanceof Error ? e.message : String(e), finishedAt: new Date().toISOString() }, statePath);
  }
}

main().then(
  () => process.exit(0),
  () => process.exit(1),
);
