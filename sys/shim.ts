/**
 * The container supervisor ("shim"), one detached process per container, started by the runtime as
 * `node shim.js CONTAINER_DIR` (runtime/shim-main.ts wires the pure command-line planning of
 * runtime/shim-plan.ts into this mechanism). It creates the container's namespaces, starts its
 * process, copies its output to the log files (and to attached clients), and records each phase in
 * CONTAINER_DIR/state.json (temp file + rename): starting → running (host PID of the container's
 * PID 1, with its start time) → exited (exit code), or failed (why).
 *
 * With `tty` the process runs on a pseudo-terminal (sys/pty.ts); with `openStdin` its stdin is a
 * pipe fed by attached clients. Clients attach through the unix socket `paths.attach`
 * (sys/attach.ts frames); with `waitAttach` the process starts once the first client is there
 * (a foreground `run -i`/`-t` must not miss the first output), or after ATTACH_WAIT_MS.
 *
 * To start fast it loads no schema library: spec.json was written, after validation, by the runtime,
 * in a root-only directory.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { lstat, mkdir, open, readFile, readlink, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import type { Argv, InteractiveProcess } from './api.js';
import { FRAME, encodeFrame, frameReader, socketPath } from './attach.js';
import { daemonCall } from './daemon-client.js';
import { run, spawnLongLived, type LongLived } from './exec.js';
import { readProcStat } from './proc-stat.js';
import { spawnInteractive } from './pty.js';

const STEP_TIMEOUT_MS = 10_000;
const ATTACH_WAIT_MS = 10_000;

/** What the supervisor reads of spec.json (runtime/spec.ts ShimSpec). */
export interface ShimSpecView {
  readonly schemaVersion: number;
  readonly rootfs: string | null;
  readonly tty: { readonly cols: number; readonly rows: number } | null;
  readonly openStdin: boolean;
  readonly waitAttach: boolean;
  readonly id: string;
  readonly paths: { readonly state: string; readonly fstab: string; readonly stdout: string; readonly stderr: string; readonly attach: string; readonly notify?: string | undefined };
}

/** What it writes to state.json (runtime/spec.ts ShimState). */
export interface ShimStateView {
  readonly phase: 'starting' | 'running' | 'exited' | 'failed';
  readonly shimPid: number;
  readonly shimStartTime: string;
  readonly pid: number | null;
  readonly pidStartTime: string | null;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
  readonly exitCode: number | null;
  readonly error: string | null;
}

/** The pure planning the supervisor follows (runtime/shim-plan.ts). */
export interface ShimPlan<S extends ShimSpecView> {
  waiterArgv(spec: S): Argv;
  hostnameArgv(spec: S, waiterPid: number): Argv;
  mountArgv(spec: S, waiterPid: number): Argv | undefined;
  containerArgv(spec: S, waiterPid: number): Argv;
  fstabText(spec: S): string;
  rootfsMountPoints(spec: S): readonly { readonly path: string; readonly kind: 'dir' | 'file' }[];
  setupFailure(stderrHead: string): string | undefined;
  exitCodeOf(code: number | null, signalNumber: number | undefined): number;
  readonly unshareSigkillMessage: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Creates a mount point inside the rootfs, refusing symlinks (they would resolve on the host). */
async function ensureMountPoint(rootfs: string, mp: { readonly path: string; readonly kind: 'dir' | 'file' }): Promise<void> {
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

/** Resolves with the waiter once `cat` echoes (its namespaces exist). */
function startWaiter(argv: Argv, track: (w: LongLived) => void): Promise<LongLived> {
  const w = spawnLongLived(argv);
  track(w);
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

/** The attach socket: clients, their input, and the output fan-out. */
interface AttachHub {
  readonly firstClient: Promise<void>;
  broadcast(type: typeof FRAME.stdout | typeof FRAME.stderr, data: Buffer): void;
  bind(p: InteractiveProcess): void;
  close(): Promise<void>;
}

async function openAttach(path: string): Promise<AttachHub> {
  const clients = new Set<net.Socket>();
  let proc: InteractiveProcess | undefined;
  const pending: Buffer[] = [];
  let pendingEnd = false;
  let first: () => void = () => undefined;
  const firstClient = new Promise<void>((r) => {
    first = r;
  });
  const server = net.createServer((sock) => {
    clients.add(sock);
    first();
    sock.on('error', () => undefined);
    sock.on('close', () => clients.delete(sock));
    sock.on('data', frameReader((type, payload) => {
      if (type === FRAME.stdin) {
        if (proc) proc.write(Buffer.from(payload));
        else pending.push(Buffer.from(payload));
      } else if (type === FRAME.stdinEnd) {
        if (proc) proc.endInput();
        else pendingEnd = true;
      } else if (type === FRAME.resize && payload.length === 4) {
        proc?.resize(payload.readUInt16BE(0), payload.readUInt16BE(2));
      }
    }));
  });
  await rm(path, { force: true });
  await socketPath(path, (p) => new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(p, () => resolve());
  }));
  return {
    firstClient,
    broadcast(type, data) {
      const f = encodeFrame(type, data);
      for (const c of clients) if (c.writable) c.write(f);
    },
    bind(p) {
      proc = p;
      for (const b of pending.splice(0)) p.write(b);
      if (pendingEnd) p.endInput();
    },
    async close() {
      await Promise.all([...clients].map((c) => new Promise<void>((r) => {
        c.end(() => r());
        setTimeout(r, 1_000).unref();
      })));
      await new Promise<void>((r) => server.close(() => r()));
      await rm(path, { force: true });
    },
  };
}

export async function superviseContainer<S extends ShimSpecView>(dir: string | undefined, plan: ShimPlan<S>): Promise<void> {
  if (dir === undefined || !dir.startsWith('/')) throw new Error('usage: shim.js CONTAINER_DIR');
  const spec = JSON.parse(await readFile(join(dir, 'spec.json'), 'utf8')) as S;
  if (spec.schemaVersion !== 1) throw new Error(`spec.json: unsupported schemaVersion ${String(spec.schemaVersion)}`);
  const statePath = spec.paths.state;
  let state: ShimStateView | undefined;
  const writeState = async (next: ShimStateView): Promise<void> => {
    state = next;
    const tmp = `${statePath}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify(next)}\n`, { mode: 0o600 });
    await rename(tmp, statePath);
  };
  const self = await readProcStat(process.pid);
  const base: ShimStateView = {
    phase: 'starting', shimPid: process.pid, shimStartTime: self?.startTime ?? '0',
    pid: null, pidStartTime: null, startedAt: null, finishedAt: null, exitCode: null, error: null,
  };
  await writeState(base);

  let waiter: LongLived | undefined;
  let container: InteractiveProcess | undefined;
  let hub: AttachHub | undefined;
  try {
    if (spec.rootfs !== null) {
      if (!(await stat(spec.rootfs)).isDirectory()) throw new Error(`rootfs ${spec.rootfs} is not a directory`);
      for (const mp of plan.rootfsMountPoints(spec)) await ensureMountPoint(spec.rootfs, mp);
    }
    const fstab = plan.fstabText(spec);
    if (fstab !== '') await writeFile(spec.paths.fstab, fstab, { mode: 0o600 });
    const attachable = spec.tty !== null || spec.openStdin;
    if (attachable) hub = await openAttach(spec.paths.attach);

    const w = await startWaiter(plan.waiterArgv(spec), (x) => {
      waiter = x;
    });
    // Never touch the host's hostname or mounts: the waiter must be in namespaces of its own.
    for (const ns of ['uts', 'mnt', 'ipc']) {
      const [theirs, mine] = await Promise.all([readlink(`/proc/${w.pid}/ns/${ns}`), readlink(`/proc/self/ns/${ns}`)]);
      if (theirs === mine) throw new Error(`namespace holder ${w.pid} shares our ${ns} namespace`);
    }
    const mount = plan.mountArgv(spec, w.pid);
    await Promise.all([
      run(plan.hostnameArgv(spec, w.pid), { timeoutMs: STEP_TIMEOUT_MS }),
      mount === undefined ? undefined : run(mount, { timeoutMs: STEP_TIMEOUT_MS }),
    ]);

    await mkdir(dirname(spec.paths.stdout), { recursive: true });
    const out = createWriteStream(spec.paths.stdout, { flags: 'a', mode: 0o600 });
    const err = createWriteStream(spec.paths.stderr, { flags: 'a', mode: 0o600 });
    if (hub !== undefined && spec.waitAttach) await Promise.race([hub.firstClient, sleep(ATTACH_WAIT_MS)]);

    const c = await spawnInteractive(plan.containerArgv(spec, w.pid), {
      stdin: spec.openStdin,
      ...(spec.tty !== null ? { tty: spec.tty } : {}),
    });
    container = c;
    hub?.bind(c);
    let errTail = '';
    c.onOutput((stream, d) => {
      if (stream === 'stdout') out.write(d);
      else {
        errTail = (errTail + d.toString('latin1')).slice(-plan.unshareSigkillMessage.length);
        err.write(d);
      }
      hub?.broadcast(stream === 'stdout' ? FRAME.stdout : FRAME.stderr, d);
    });
    let done = false;
    const closed = c.exited.then((r) => {
      done = true;
      return r;
    });

    const pid = await findContainerPid(c.pid, () => done);
    const startedAt = new Date().toISOString();
    const pidStartTime = pid === undefined ? undefined : (await readProcStat(pid))?.startTime;
    if (pid !== undefined && pidStartTime !== undefined) await writeState({ ...base, phase: 'running', pid, pidStartTime, startedAt });
    await w.close(STEP_TIMEOUT_MS); // the container holds its namespaces now

    const { code, signal } = await closed;
    await Promise.all([finished(out), finished(err)]);
    let exitCode = plan.exitCodeOf(code, signal === null ? undefined : (constants.signals as Record<string, number>)[signal]);
    if (code === 1 && errTail === plan.unshareSigkillMessage) {
      exitCode = 137;
      const size = (await stat(spec.paths.stderr)).size;
      await truncate(spec.paths.stderr, Math.max(0, size - plan.unshareSigkillMessage.length));
    }
    if (pid === undefined && exitCode !== 0) {
      const fh = await open(spec.paths.stderr, 'r');
      const head = Buffer.alloc(4096);
      const { bytesRead } = await fh.read(head, 0, head.length, 0).finally(() => fh.close());
      const why = plan.setupFailure(head.subarray(0, bytesRead).toString());
      if (why !== undefined) throw new Error(why);
    }
    await writeState({
      ...base, phase: 'exited', pid: pid ?? null, pidStartTime: pidStartTime ?? null, startedAt,
      finishedAt: new Date().toISOString(), exitCode,
    });
  } catch (e) {
    container?.kill('SIGKILL');
    if (waiter !== undefined && waiter.child.exitCode === null && waiter.child.signalCode === null) waiter.child.kill('SIGKILL');
    await writeState({ ...(state ?? base), phase: 'failed', error: e instanceof Error ? e.message : String(e), finishedAt: new Date().toISOString() });
  } finally {
    await hub?.close();
  }
  // The daemon releases the container's network at once (best effort: without a daemon, the next
  // command that looks at the container observes the exit).
  if (spec.paths.notify !== undefined) await daemonCall(spec.paths.notify, 'exited', 5_000, { container: spec.id }).catch(() => undefined);
}
