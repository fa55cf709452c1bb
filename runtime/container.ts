/**
 * The bundled minimal container runtime: a container is a process tree in new UTS, IPC, PID and
 * mount namespaces (optionally chrooted into a rootfs), joined to a network namespace prepared by
 * the networking layer. One detached shim process per container (runtime/shim-main.ts) starts it
 * and records its phases in the container's run directory; this module owns the records and the
 * lifecycle. Records are the source of truth for "which containers exist"; their status is
 * refreshed from the shim's state file and /proc (pid + start time + boot id, so a reused pid is
 * never mistaken for the container) whenever they are read, so `ps` is right after a restart.
 */
import { constants } from 'node:os';
import { join } from 'node:path';
import { TsnetError, isCode, wrap } from '../core/errors.js';
import { KeyedMutex } from '../core/keyed-mutex.js';
import type { Argv, ExecFailureDetails } from '../sys/api.js';
import { TTY_SESSION, nativeSpec } from './shim-plan.js';
import type { AttachConnection, ContainerEvent, ExecOptions, ExecResult, OutputChunk, Runtime, RuntimeDeps, StopOptions } from './api.js';
import {
  ID_PATTERN, NAME_PATTERN, ShimSpecSchema, parseContainerSpec, parseShimState,
  type ContainerRecord, type ContainerSpecInput, type ShimSpec, type ShimState,
} from './spec.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const READ_CHUNK = 64 * 1024;
const KILL_WAIT_MS = 10_000;
const EXIT_RECORD_WAIT_MS = 2_000;

interface Paths {
  readonly dir: string;
  readonly logs: string;
  readonly spec: string;
  readonly nativeSpec: string;
  readonly state: string;
  readonly fstab: string;
  readonly files: string;
  readonly stdout: string;
  readonly stderr: string;
  readonly attach: string;
}

/** Where `--init` is seen inside a container with its own root filesystem (bind-mounted there). */
const INIT_IN_ROOTFS = '/sbin/tsnet-init';

/** A user for `exec -u`, resolved in the container's passwd and group files. */
export interface ExecUser {
  readonly uid: number;
  readonly gid: number;
  readonly home?: string;
}

/** `-u` as Docker takes it: NAME, UID, NAME:GROUP, UID:GID (names looked up in the container's files). */
export function resolveUser(spec: string, passwd: string, group: string): ExecUser {
  const [u = '', g] = spec.split(':');
  const bad = (msg: string): TsnetError => new TsnetError('INVALID_CONFIG', `user: ${msg}`, { details: { field: 'user', value: spec } });
  if (u === '' || (g !== undefined && g === '')) throw bad(`expected NAME[:GROUP] or UID[:GID], got ${JSON.stringify(spec)}`);
  const users = passwd.split('\n').map((l) => l.split(':')).filter((f) => f.length >= 7);
  const groups = group.split('\n').map((l) => l.split(':')).filter((f) => f.length >= 3);
  const entry = /^\d+$/.test(u) ? users.find((f) => f[2] === u) : users.find((f) => f[0] === u);
  if (entry === undefined && !/^\d+$/.test(u)) throw new TsnetError('NOT_FOUND', `user: unable to find user ${u}: no matching entries in passwd file`, { details: { field: 'user', value: spec } });
  const uid = Number(entry?.[2] ?? u);
  let gid = Number(entry?.[3] ?? 0);
  if (g !== undefined) {
    if (/^\d+$/.test(g)) gid = Number(g);
    else {
      const ge = groups.find((f) => f[0] === g);
      if (ge === undefined) throw new TsnetError('NOT_FOUND', `user: unable to find group ${g}: no matching entries in group file`, { details: { field: 'user', value: spec } });
      gid = Number(ge[2]);
    }
  }
  return { uid, gid, ...(entry?.[5] ? { home: entry[5] } : {}) };
}

const signalNumber = (s: string): number | undefined => (constants.signals as Record<string, number | undefined>)[s];

function absInside(raw: string, field: string): string {
  if (!raw.startsWith('/') || raw.includes('\0') || raw.split('/').includes('..')) {
    throw new TsnetError('INVALID_CONFIG', `${field}: invalid value ${JSON.stringify(raw)}: must be an absolute path without ".."`, { details: { field, value: raw } });
  }
  return raw;
}

/** The argv of `exec`: enter every namespace and the root of the container's PID 1, with a clean environment. */
export function execArgvFor(
  record: ContainerRecord,
  tools: RuntimeDeps['tools'],
  argv: readonly [string, ...string[]],
  opts: Omit<ExecOptions, 'input' | 'timeoutMs' | 'user'> & { readonly user?: ExecUser; readonly tty?: boolean } = {},
): Argv {
  if (record.pid === null) throw new TsnetError('UNAVAILABLE', `container ${record.name} is not running`);
  const home = opts.user?.home !== undefined ? { HOME: opts.user.home } : {};
  const env = Object.entries({ ...record.env, ...home, ...opts.env }).map(([k, v]) => {
    if (k === '' || k.includes('=') || k.includes('\0') || v.includes('\0')) throw new TsnetError('INVALID_CONFIG', `exec env: invalid variable ${JSON.stringify(k)}`, { details: { field: 'env', value: k } });
    return `${k}=${v}`;
  });
  for (const a of argv) if (a.includes('\0')) throw new TsnetError('INVALID_CONFIG', 'exec argv: must not contain NUL', { details: { field: 'argv' } });
  const wd = opts.cwd === undefined ? '--wd' : `--wd=/proc/${record.pid}/root${absInside(opts.cwd, 'exec cwd')}`;
  const user = opts.user === undefined ? [] : ['--setuid', String(opts.user.uid), '--setgid', String(opts.user.gid)];
  return [tools.env, '-i', '--', ...env, tools.nsenter, '--target', String(record.pid), '--all', '--root', wd, ...user, '--', ...(opts.tty === true ? TTY_SESSION : []), ...argv];
}

interface StartOptions {
  readonly ttySize?: { readonly cols: number; readonly rows: number };
  /** The process starts once this attached (foreground -i/-t). */
  readonly onAttach?: (conn: AttachConnection) => void;
}

export function createRuntime(deps: RuntimeDeps): Runtime {
  const log = deps.log.child({ component: 'runtime' });
  const pollMs = deps.pollMs ?? 20;
  const startTimeoutMs = deps.startTimeoutMs ?? 10_000;
  const mutex = new KeyedMutex();
  const now = (): string => deps.clock.now().toISOString();

  const pathsOf = (id: string): Paths => {
    const dir = join(deps.runDir, id);
    const logs = join(deps.logDir ?? deps.runDir, id);
    return {
      dir, logs,
      spec: join(dir, 'spec.json'), nativeSpec: join(dir, 'spec.nul'), state: join(dir, 'state.json'), fstab: join(dir, 'fstab'), files: join(dir, 'files'),
      stdout: join(logs, 'stdout.log'), stderr: join(logs, 'stderr.log'), attach: join(dir, 'attach.sock'),
    };
  };

  async function readState(id: string): Promise<ShimState | undefined> {
    let text: string | undefined;
    try {
      text = await deps.files.readText(pathsOf(id).state);
    } catch (err) {
      throw wrap(`read state of container ${id}`, err);
    }
    return text === undefined ? undefined : parseShimState(JSON.parse(text));
  }

  /** Is pid the process we recorded (same start time, same boot)? */
  async function isLive(pid: number | null, startTime: string | null, bootId: string | null): Promise<boolean> {
    if (pid === null || startTime === null) return false;
    if (bootId !== null && bootId !== (await deps.procs.bootId())) return false;
    return (await deps.procs.startTime(pid)) === startTime;
  }
  const shimLive = (st: ShimState): Promise<boolean> => isLive(st.shimPid, st.shimStartTime, null);

  /** Polls `check` until it returns a value or `ms` pass. */
  async function poll<T>(ms: number, check: () => Promise<T | undefined>, every = pollMs): Promise<T | undefined> {
    const deadline = deps.clock.now().getTime() + ms;
    for (;;) {
      const v = await check();
      if (v !== undefined) return v;
      if (deps.clock.now().getTime() >= deadline) return undefined;
      await deps.clock.sleep(every);
    }
  }

  const emit = (action: ContainerEvent['action'], container: ContainerRecord, attributes?: Record<string, string>): void => {
    try {
      deps.onEvent?.({ action, container, ...(attributes !== undefined ? { attributes } : {}) });
    } catch (err) {
      log.warn('event listener failed', { action, err });
    }
  };

  const exitHook = async (rec: ContainerRecord): Promise<void> => {
    await deps.onExit?.(rec).catch((err: unknown) => log.warn('after exit', { container: rec.name, err: err instanceof Error ? err.message : String(err) }));
  };

  async function save(next: ContainerRecord, prev?: ContainerRecord): Promise<ContainerRecord> {
    // An exit seen: the exit hook (network, addresses, names released) runs BEFORE the record says
    // "exited", so that whoever reads "exited" finds them gone, as in Docker, where the container's
    // state changes under its lock together with the cleanup. Found in CI: `kill`, then `ps` saying
    // exited while the daemon, which wrote that record, was still taking the name out of DNS. Every
    // process that sees the exit may run the hook (it is idempotent, and serialized by the
    // sandbox's lock); a failure is logged and the exit recorded all the same, as before.
    const exiting = prev !== undefined && prev.status !== 'exited' && next.status === 'exited';
    if (exiting) await exitHook(next);
    let was: ContainerRecord;
    try {
      was = await deps.store.update(next);
    } catch (err) {
      if (!isCode(err, 'NOT_FOUND')) throw err; // removed meanwhile: report what we saw
      return next;
    }
    // The transition is the stored record's: of the processes that see the exit (the daemon told by
    // the supervisor, a `stop` polling), only the one whose write ended "running" reports it.
    if (exiting && was.status !== 'exited') emit('die', next, { exitCode: String(next.exitCode ?? -1) });
    return next;
  }

  const exitedFrom = (rec: ContainerRecord, st: ShimState): ContainerRecord => ({
    ...rec,
    status: 'exited',
    pid: st.pid ?? rec.pid,
    pidStartTime: st.pidStartTime ?? rec.pidStartTime,
    startedAt: st.startedAt ?? rec.startedAt,
    finishedAt: st.finishedAt ?? rec.finishedAt ?? now(),
    exitCode: st.phase === 'exited' ? st.exitCode : null,
    error: st.phase === 'failed' ? st.error : rec.error,
  });

  /** The record brought up to date with the shim's state file and /proc; persisted if it changed. */
  async function refresh(rec: ContainerRecord): Promise<ContainerRecord> {
    if (rec.status === 'exited' && (rec.exitCode !== null || rec.error !== null)) return rec;
    const next = await observe(rec);
    // Most often observe hands back the record itself (a running container whose process lives).
    return next === rec || JSON.stringify(next) === JSON.stringify(rec) ? rec : save(next, rec);
  }

  async function observe(rec: ContainerRecord): Promise<ContainerRecord> {
    // The common case first: a running container whose process is the one recorded (one /proc read).
    if (rec.status === 'running' && (await isLive(rec.pid, rec.pidStartTime, rec.bootId))) return rec;
    let st = await readState(rec.id);
    if (st === undefined) {
      if (rec.status === 'running' && (await isLive(rec.pid, rec.pidStartTime, rec.bootId))) return rec;
      if (rec.status === 'created' && deps.clock.now().getTime() - Date.parse(rec.createdAt) < startTimeoutMs + 5_000) return rec; // maybe starting elsewhere
      if (rec.status === 'exited') return rec;
      return { ...rec, status: 'exited', finishedAt: now(), exitCode: null, error: rec.status === 'created' ? 'the container never started' : rec.error };
    }
    switch (st.phase) {
      case 'exited':
      case 'failed':
        return exitedFrom(rec, st);
      case 'running': {
        const bootId = rec.bootId ?? (await deps.procs.bootId());
        if (await isLive(st.pid, st.pidStartTime, bootId)) {
          return { ...rec, status: 'running', pid: st.pid, pidStartTime: st.pidStartTime, bootId, startedAt: st.startedAt, error: null };
        }
        // The process is gone. Its shim records the exit code within moments, unless it died too.
        if (await shimLive(st)) {
          const later = await poll(EXIT_RECORD_WAIT_MS, async () => {
            const s = await readState(rec.id);
            return s !== undefined && s.phase !== 'running' ? s : undefined;
          });
          if (later !== undefined) return exitedFrom(rec, later);
          st = (await readState(rec.id)) ?? st;
        }
        return { ...exitedFrom(rec, st), exitCode: null };
      }
      case 'starting':
        if (await shimLive(st)) return rec;
        return { ...rec, status: 'exited', finishedAt: now(), exitCode: null, error: 'the container supervisor died while starting it' };
    }
  }

  async function resolve(ref: string): Promise<ContainerRecord | undefined> {
    if (ID_PATTERN.test(ref)) {
      const byId = await deps.store.get(ref);
      if (byId !== undefined) return byId;
    }
    const name = ref.startsWith('/') ? ref.slice(1) : ref;
    const byName = NAME_PATTERN.test(name) ? await deps.store.byName(name) : undefined;
    if (byName !== undefined) return byName;
    if (/^[0-9a-f]+$/.test(ref)) {
      const hits = await deps.store.list(ref);
      if (hits.length > 1) throw new TsnetError('INVALID_CONFIG', `container id prefix ${ref} is ambiguous (${hits.length} containers)`, { details: { field: 'container', value: ref } });
      if (hits[0] !== undefined) return hits[0];
    }
    return undefined;
  }

  async function mustResolve(ref: string): Promise<ContainerRecord> {
    const rec = await resolve(ref);
    if (rec === undefined) throw new TsnetError('NOT_FOUND', `no such container: ${ref}`, { details: { field: 'container', value: ref } });
    return rec;
  }

  /** Writes the container's run directory (bound files, the supervisor's spec); the supervisor's command line. */
  async function prepare(rec: ContainerRecord, opts: StartOptions): Promise<{ readonly spec: ShimSpec; readonly argv: readonly [string, ...string[]] }> {
    const p = pathsOf(rec.id);
    await deps.files.makeDir(p.dir, 0o700);
    await deps.files.makeDir(p.logs, 0o700);
    const binds: { source: string; target: string }[] = [];
    let n = 0;
    for (const [target, src] of Object.entries(rec.files)) {
      if ('hostPath' in src) {
        binds.push({ source: src.hostPath, target });
        continue;
      }
      const source = join(p.files, `${n++}-${target.split('/').filter(Boolean).join('-')}`);
      await deps.files.write(source, src.content, 0o644);
      binds.push({ source, target });
    }
    let argv = rec.argv;
    if (rec.init) {
      const init = deps.initPath;
      if (init === undefined) throw new TsnetError('UNAVAILABLE', 'init: no init binary (install tini: it provides tini-static)', { details: { field: 'init' } });
      if (rec.rootfs !== null) binds.push({ source: init, target: INIT_IN_ROOTFS });
      argv = [rec.rootfs !== null ? INIT_IN_ROOTFS : init, '--', ...rec.argv];
    }
    const spec = ShimSpecSchema.parse({
      schemaVersion: 1, id: rec.id, hostname: rec.hostname, argv, env: rec.env, cwd: rec.cwd,
      rootfs: rec.rootfs, netns: rec.netns, binds, tools: deps.tools,
      tty: rec.tty ? (opts.ttySize ?? { cols: 80, rows: 24 }) : null,
      openStdin: rec.openStdin,
      waitAttach: opts.onAttach !== undefined,
      paths: { state: p.state, fstab: p.fstab, stdout: p.stdout, stderr: p.stderr, attach: p.attach, ...(deps.daemonSocket !== undefined ? { notify: deps.daemonSocket } : {}) },
    });
    const native = deps.nativeShim !== undefined && spec.tty === null && !spec.openStdin;
    if (native) await deps.files.write(p.nativeSpec, nativeSpec(spec), 0o600);
    else await deps.files.write(p.spec, `${JSON.stringify(spec)}\n`, 0o600);
    return { spec, argv: native ? [deps.nativeShim as string, p.nativeSpec] : [...deps.shim, p.dir] };
  }

  /** Checks what must exist on the host before anything is recorded. */
  async function checkHost(spec: ReturnType<typeof parseContainerSpec>): Promise<void> {
    const exists = async (path: string, field: string, dir: boolean): Promise<void> => {
      const kind = await deps.files.kind(path).catch(() => undefined);
      if (kind === undefined) throw new TsnetError('NOT_FOUND', `${field}: ${path} does not exist`, { details: { field, value: path } });
      if (dir && kind !== 'dir') throw new TsnetError('INVALID_CONFIG', `${field}: ${path} is not a directory`, { details: { field, value: path } });
    };
    if (spec.rootfs !== undefined) await exists(spec.rootfs, 'rootfs', true);
    if (spec.netns.kind === 'path') await exists(spec.netns.path, 'netns', false);
    for (const [target, src] of Object.entries(spec.files)) if ('hostPath' in src) await exists(src.hostPath, `files[${target}]`, false);
  }

  /** Kills what a failed or aborted start may have left: the shim's process group and the container. */
  async function killStart(shimPid: number | undefined, st: ShimState | undefined, bootId: string): Promise<void> {
    if (st !== undefined && (await isLive(st.pid, st.pidStartTime, bootId)) && st.pid !== null) await deps.procs.kill(st.pid, 'SIGKILL');
    if (st !== undefined && (await shimLive(st))) await deps.procs.kill(st.shimPid, 'SIGKILL', { group: true });
    else if (shimPid !== undefined && shimPid > 0 && st === undefined) await deps.procs.kill(shimPid, 'SIGKILL', { group: true }).catch(() => false);
  }

  /** Connects to the supervisor's attach socket as soon as it listens. */
  async function attachTo(rec: ContainerRecord, shimPid: number): Promise<AttachConnection> {
    const connect = deps.exec.attach;
    if (connect === undefined) throw new TsnetError('UNAVAILABLE', 'this runtime cannot attach to containers');
    const path = pathsOf(rec.id).attach;
    const conn = await poll(startTimeoutMs, async () => {
      if ((await deps.files.kind(path)) !== 'socket') {
        if ((await deps.procs.startTime(shimPid)) === undefined) {
          const st = await readState(rec.id);
          throw new TsnetError(st?.phase === 'failed' ? 'INTERNAL' : 'UNAVAILABLE', st?.error ?? 'the container supervisor exited before it could be attached to');
        }
        return undefined;
      }
      return connect(path).catch(() => undefined);
    }, 2);
    if (conn === undefined) throw new TsnetError('UNAVAILABLE', `could not attach to container ${rec.name} within ${startTimeoutMs} ms`);
    return conn;
  }

  async function start(rec: ContainerRecord, opts: StartOptions = {}): Promise<ContainerRecord> {
    const p = pathsOf(rec.id);
    const bootId = await deps.procs.bootId();
    let shimPid: number | undefined;
    let conn: AttachConnection | undefined;
    try {
      const { argv } = await prepare(rec, opts);
      await deps.files.remove(p.state); // the state of an earlier run
      shimPid = deps.exec.spawnDetached(argv);
      if (!Number.isInteger(shimPid) || shimPid <= 0) throw new TsnetError('UNAVAILABLE', `could not start the container supervisor (${argv.join(' ')})`);
      const pid = shimPid;
      if (opts.onAttach !== undefined) {
        conn = await attachTo(rec, pid);
        opts.onAttach(conn);
      }
      const st = await poll(startTimeoutMs, async () => {
        const s = await readState(rec.id);
        if (s !== undefined && s.phase !== 'starting') return s;
        const alive = s === undefined ? (await deps.procs.startTime(pid)) !== undefined : await shimLive(s);
        if (alive) return undefined;
        const last = await readState(rec.id); // it may have finished between the two reads
        if (last !== undefined && last.phase !== 'starting') return last;
        throw new TsnetError('UNAVAILABLE', last === undefined
          ? `the container supervisor exited before starting the container (${argv.join(' ')})`
          : 'the container supervisor died while starting the container');
      }, Math.min(pollMs, 2));
      if (st === undefined) throw new TsnetError('UNAVAILABLE', `the container did not start within ${startTimeoutMs} ms`);
      if (st.phase === 'failed') throw new TsnetError('INTERNAL', st.error ?? 'the container failed to start');
      const fresh: ContainerRecord = { ...rec, bootId, finishedAt: null, exitCode: null, error: null };
      const next: ContainerRecord = st.phase === 'running'
        ? { ...fresh, status: 'running', pid: st.pid, pidStartTime: st.pidStartTime, startedAt: st.startedAt }
        : exitedFrom(fresh, st);
      if (next.status === 'exited') await exitHook(next); // before the record says so (see save)
      try {
        await deps.store.update(next);
      } catch (err) {
        if (isCode(err, 'NOT_FOUND')) throw new TsnetError('NOT_FOUND', `container ${rec.name} was removed while it was starting`);
        throw err;
      }
      log.info('container started', { container: rec.name, id: rec.id, pid: next.pid, status: next.status });
      emit('start', next);
      if (next.status === 'exited') emit('die', next, { exitCode: String(next.exitCode ?? -1) });
      return next;
    } catch (err) {
      conn?.close();
      const st = await readState(rec.id).catch(() => undefined);
      await killStart(shimPid, st, bootId).catch((e: unknown) => log.warn('cleanup after failed start', { container: rec.name, err: e }));
      const msg = err instanceof Error ? err.message : String(err);
      if (isCode(err, 'NOT_FOUND') && (await deps.store.get(rec.id)) === undefined) {
        await deps.files.remove(p.dir);
        await deps.files.remove(p.logs);
      } else {
        await save({ ...rec, status: 'exited', finishedAt: now(), exitCode: null, error: msg }).catch(() => undefined);
      }
      throw wrap(`run ${rec.name}`, err);
    }
  }

  const readFrom = (path: string, offset: number): Promise<Buffer> => deps.files.readChunk(path, offset, READ_CHUNK);

  async function* logs(ref: string, opts: { readonly follow?: boolean; readonly signal?: AbortSignal } = {}): AsyncGenerator<OutputChunk> {
    const rec = await mustResolve(ref);
    const p = pathsOf(rec.id);
    const offsets = { stdout: 0, stderr: 0 };
    let finalPass = false;
    for (;;) {
      let got = false;
      for (const stream of ['stdout', 'stderr'] as const) {
        for (;;) {
          const data = await readFrom(p[stream], offsets[stream]);
          if (data.length === 0) break;
          offsets[stream] += data.length;
          got = true;
          yield { stream, data };
        }
      }
      if (opts.follow !== true || finalPass || opts.signal?.aborted === true) return;
      if (got) continue;
      const cur = await deps.store.get(rec.id);
      if (cur === undefined) return;
      if ((await refresh(cur)).status === 'exited') finalPass = true;
      else await deps.clock.sleep(Math.max(pollMs, 50));
    }
  }

  async function waitExit(ref: string, opts: { readonly signal?: AbortSignal } = {}): Promise<number | null> {
    const rec = await mustResolve(ref);
    for (;;) {
      const cur = await deps.store.get(rec.id);
      if (cur === undefined) throw new TsnetError('NOT_FOUND', `container ${rec.name} was removed`);
      const r = await refresh(cur);
      if (r.status === 'exited') return r.exitCode;
      if (opts.signal?.aborted === true) throw new TsnetError('UNAVAILABLE', `wait ${rec.name}: aborted`);
      await deps.clock.sleep(Math.max(pollMs, 50));
    }
  }

  /** Sends `signal` to the container's PID 1 if it is still the process we recorded. */
  async function signalContainer(rec: ContainerRecord, signal: NodeJS.Signals): Promise<boolean> {
    if (!(await isLive(rec.pid, rec.pidStartTime, rec.bootId)) || rec.pid === null) return false;
    return deps.procs.kill(rec.pid, signal);
  }

  const untilDead = (rec: ContainerRecord, ms: number): Promise<true | undefined> =>
    poll(ms, async () => ((await isLive(rec.pid, rec.pidStartTime, rec.bootId)) ? undefined : true));

  /** After the process died: let the shim record the exit code, then refresh. */
  async function settle(rec: ContainerRecord): Promise<ContainerRecord> {
    await poll(EXIT_RECORD_WAIT_MS, async () => {
      const st = await readState(rec.id);
      if (st === undefined || st.phase === 'exited' || st.phase === 'failed' || !(await shimLive(st))) return true;
      return undefined;
    });
    return refresh(rec);
  }

  async function stopLocked(rec0: ContainerRecord, opts: StopOptions): Promise<ContainerRecord> {
    const signal = opts.signal ?? 'SIGTERM';
    if (signalNumber(signal) === undefined) throw new TsnetError('INVALID_CONFIG', `stop: unknown signal ${signal}`, { details: { field: 'signal', value: signal } });
    const timeoutSec = opts.timeoutSec ?? 10;
    if (!(timeoutSec >= 0)) throw new TsnetError('INVALID_CONFIG', `stop: invalid timeout ${timeoutSec}`, { details: { field: 'timeout', value: timeoutSec } });
    let rec = await refresh(rec0);
    if (rec.status === 'created') {
      // Starting (here or in another process): let it finish, so there is a pid to signal.
      rec = (await poll(startTimeoutMs, async () => {
        const r = await refresh(rec);
        return r.status === 'created' ? undefined : r;
      })) ?? rec;
    }
    if (rec.status !== 'running') return rec;
    const t0 = deps.clock.now().getTime();
    if (await signalContainer(rec, signal)) {
      emit('kill', rec, { signal: String(signalNumber(signal) ?? signal) });
      if ((await untilDead(rec, timeoutSec * 1000)) === undefined) {
        log.info('container did not stop in time; killing it', { container: rec.name, signal, timeoutSec });
        await signalContainer(rec, 'SIGKILL');
        if ((await untilDead(rec, KILL_WAIT_MS)) === undefined) throw new TsnetError('UNAVAILABLE', `container ${rec.name} (pid ${String(rec.pid)}) survived SIGKILL`);
      }
    }
    const done = await settle(rec);
    log.info('container stopped', { container: rec.name, exitCode: done.exitCode, ms: deps.clock.now().getTime() - t0 });
    emit('stop', done);
    return done;
  }

  async function removeLocked(rec0: ContainerRecord, force: boolean): Promise<ContainerRecord> {
    let rec = await refresh(rec0);
    const st = await readState(rec.id);
    const starting = rec.status === 'created' && (st === undefined ? true : await shimLive(st));
    if ((rec.status === 'running' || starting) && !force) {
      // In use (README: exit code 4), as Docker answers 409 Conflict.
      throw new TsnetError('ALREADY_EXISTS', `container ${rec.name} is ${rec.status === 'running' ? 'running' : 'starting'}: stop it first, or remove it with force`, { details: { field: 'container', value: rec.name } });
    }
    if (rec.status === 'running') rec = await stopLocked(rec, { signal: 'SIGKILL', timeoutSec: 0 });
    if (st !== undefined && (await shimLive(st))) {
      await deps.procs.kill(st.shimPid, 'SIGKILL', { group: true });
      await poll(KILL_WAIT_MS, async () => ((await shimLive(st)) ? undefined : true));
    }
    if (deps.onRemove !== undefined) {
      try {
        await deps.onRemove(rec);
      } catch (err) {
        throw wrap(`remove ${rec.name}`, err);
      }
    }
    const p = pathsOf(rec.id);
    await deps.files.remove(p.dir);
    await deps.files.remove(p.logs);
    await deps.store.delete(rec.id);
    log.info('container removed', { container: rec.name, id: rec.id });
    emit('destroy', rec);
    return rec;
  }

  /** A foreground `--rm` container whose client is gone: nobody else will remove it. */
  async function orphaned(rec: ContainerRecord): Promise<boolean> {
    if (!rec.autoRemove || rec.foreground === null) return false;
    if (rec.foreground.pid === deps.selfPid) return false;
    return (await deps.procs.startTime(rec.foreground.pid)) !== rec.foreground.startTime;
  }

  /** A container nobody will remove: an exited `--rm` one without a client, or one whose client is gone. */
  async function unclaimed(rec: ContainerRecord): Promise<boolean> {
    return (rec.status === 'exited' && rec.autoRemove && rec.foreground === null) || orphaned(rec);
  }

  async function userOf(rec: ContainerRecord, user: string | undefined): Promise<ExecUser | undefined> {
    if (user === undefined) return undefined;
    const root = `/proc/${String(rec.pid)}/root`;
    const [passwd, group] = await Promise.all([deps.files.readText(`${root}/etc/passwd`), deps.files.readText(`${root}/etc/group`)]);
    return resolveUser(user, passwd ?? '', group ?? '');
  }

  async function runningArgv(ref: string, argv: readonly [string, ...string[]], opts: Omit<ExecOptions, 'input' | 'timeoutMs'> & { readonly tty?: boolean }): Promise<{ rec: ContainerRecord; argv: Argv }> {
    const rec = await refresh(await mustResolve(ref));
    if (rec.status !== 'running') throw new TsnetError('UNAVAILABLE', `container ${rec.name} is not running`, { details: { field: 'container', value: rec.name } });
    const { user, ...rest } = opts;
    const u = await userOf(rec, user);
    return { rec, argv: execArgvFor(rec, deps.tools, argv, { ...rest, ...(u !== undefined ? { user: u } : {}) }) };
  }

  const runtime: Runtime = {
    async run(input: ContainerSpecInput, opts = {}) {
      const spec = parseContainerSpec(input);
      const id = spec.id ?? deps.randomHex(32);
      if (!ID_PATTERN.test(id)) throw new TsnetError('INTERNAL', `generated container id ${id} is not 64 hex digits`);
      const hostname = spec.hostname ?? id.slice(0, 12);
      await checkHost(spec);
      if (spec.init && deps.initPath === undefined) throw new TsnetError('UNAVAILABLE', 'init: no init binary (install tini: it provides tini-static)', { details: { field: 'init' } });
      const detach = opts.detach !== false;
      const client = detach ? undefined : opts.client ?? (deps.selfPid !== undefined ? { pid: deps.selfPid, startTime: await deps.procs.startTime(deps.selfPid) } : undefined);
      const rec: ContainerRecord = {
        schemaVersion: 1,
        id,
        name: spec.name ?? `tsnet-${id.slice(0, 12)}`,
        hostname,
        argv: spec.argv,
        env: { PATH: DEFAULT_PATH, HOSTNAME: hostname, HOME: '/root', ...(spec.tty ? { TERM: 'xterm' } : {}), ...spec.env },
        cwd: spec.cwd,
        rootfs: spec.rootfs ?? null,
        netns: spec.netns,
        files: spec.files,
        labels: spec.labels,
        autoRemove: spec.autoRemove,
        tty: spec.tty,
        openStdin: spec.openStdin,
        init: spec.init,
        config: spec.config,
        foreground: client?.startTime !== undefined ? { pid: client.pid, startTime: client.startTime } : null,
        createdAt: now(),
        status: 'created',
        pid: null, pidStartTime: null, bootId: null, startedAt: null, finishedAt: null, exitCode: null, error: null,
        restartCount: 0,
      };
      await deps.store.insert(rec); // before any process exists: nothing runs without a record
      emit('create', rec);
      const attach = !detach && (rec.tty || rec.openStdin) && opts.onAttach !== undefined;
      let conn: AttachConnection | undefined;
      const started = await mutex.run(id, () => start(rec, attach ? {
        ...(opts.ttySize !== undefined ? { ttySize: opts.ttySize } : {}),
        onAttach: (c) => {
          conn = c;
          c.onOutput((stream, data) => opts.onOutput?.({ stream, data }));
          opts.onAttach?.(c);
        },
      } : (opts.ttySize !== undefined ? { ttySize: opts.ttySize } : {})));
      if (detach) return { detached: true, container: started };
      if (conn !== undefined) await conn.closed;
      else for await (const chunk of logs(id, { follow: true, ...(opts.signal !== undefined ? { signal: opts.signal } : {}) })) opts.onOutput?.(chunk);
      // The client is gone: the container is left to its --rm and its recorded client, as when a
      // client process is killed.
      if (opts.signal?.aborted === true) return { detached: false, container: await runtime.inspect(id), exitCode: null };
      const exitCode = await waitExit(id);
      const final = await runtime.inspect(id);
      if (final.autoRemove) await runtime.remove(id, { force: true });
      return { detached: false, container: final, exitCode };
    },

    async start(ref) {
      const rec0 = await mustResolve(ref);
      return mutex.run(rec0.id, async () => {
        const rec = await refresh((await deps.store.get(rec0.id)) ?? rec0);
        if (rec.status === 'running') return rec;
        if (rec.status === 'created' && rec.startedAt === null && (await readState(rec.id)) !== undefined) {
          throw new TsnetError('UNAVAILABLE', `container ${rec.name} is starting`, { details: { field: 'container', value: rec.name } });
        }
        return start({ ...rec, status: 'created', foreground: null, restartCount: rec.startedAt === null ? rec.restartCount : rec.restartCount + 1 });
      });
    },

    async kill(ref, signal = 'SIGKILL') {
      if (signalNumber(signal) === undefined) throw new TsnetError('INVALID_CONFIG', `signal: unknown signal ${signal}`, { details: { field: 'signal', value: signal } });
      const rec = await refresh(await mustResolve(ref));
      if (rec.status !== 'running' || !(await signalContainer(rec, signal))) {
        throw new TsnetError('UNAVAILABLE', `cannot kill container ${rec.name}: container ${rec.id} is not running`, { details: { field: 'container', value: rec.name } });
      }
      emit('kill', rec, { signal: String(signalNumber(signal)) });
      if (signal === 'SIGKILL') {
        await untilDead(rec, KILL_WAIT_MS);
        return settle(rec);
      }
      return rec;
    },

    async execArgv(ref, argv, opts = {}) {
      return (await runningArgv(ref, argv, opts)).argv as readonly [string, ...string[]];
    },

    async exec(ref, argv, opts = {}): Promise<ExecResult> {
      const { input, timeoutMs, ...rest } = opts;
      const { rec, argv: full } = await runningArgv(ref, argv, rest);
      emit('exec_start', rec, { execID: argv.join(' ') });
      try {
        const r = await deps.exec.run(full, {
          ...(input !== undefined ? { input } : {}),
          timeoutMs: timeoutMs ?? 0,
        });
        return { exitCode: 0, stdout: r.stdout, stderr: r.stderr };
      } catch (err) {
        const d = err instanceof TsnetError ? (err.details as Partial<ExecFailureDetails>) : {};
        if (typeof d.exitCode === 'number') return { exitCode: d.exitCode, stdout: d.stdout ?? '', stderr: d.stderr ?? '' };
        if (typeof d.signal === 'string' && signalNumber(d.signal) !== undefined && !isCode(err, 'UNAVAILABLE')) {
          return { exitCode: 128 + (signalNumber(d.signal) ?? 0), stdout: d.stdout ?? '', stderr: d.stderr ?? '' };
        }
        throw wrap(`exec in ${ref}`, err);
      }
    },

    async execInteractive(ref, argv, opts) {
      const spawn = deps.exec.interactive;
      if (spawn === undefined) throw new TsnetError('UNAVAILABLE', 'this runtime cannot run interactive processes');
      const { tty, stdin, ...rest } = opts;
      const { rec, argv: full } = await runningArgv(ref, argv, { ...rest, tty: tty !== undefined });
      const p = await spawn(full, { stdin, ...(tty !== undefined ? { tty } : {}) });
      emit('exec_start', rec, { execID: argv.join(' ') });
      return p;
    },

    async execDetached(ref, argv, opts = {}) {
      const { rec, argv: full } = await runningArgv(ref, argv, opts);
      const pid = deps.exec.spawnDetached(full);
      if (!Number.isInteger(pid) || pid <= 0) throw new TsnetError('UNAVAILABLE', `exec in ${rec.name}: could not start ${argv[0]}`);
      emit('exec_start', rec, { execID: argv.join(' ') });
      return pid;
    },

    async list() {
      const all = await deps.store.list();
      const out: ContainerRecord[] = [];
      for (const r of all) {
        const cur = await refresh(r);
        if (await orphaned(cur)) {
          log.info('removing a foreground --rm container whose client is gone', { container: cur.name });
          if ((await runtime.remove(cur.id, { force: true }).catch(() => cur)) !== undefined) continue;
        }
        out.push(cur);
      }
      return out.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || a.name.localeCompare(b.name));
    },

    async inspect(ref) {
      return refresh(await mustResolve(ref));
    },

    logs,

    wait: waitExit,

    async stop(ref, opts = {}) {
      const rec = await mustResolve(ref);
      return mutex.run(rec.id, async () => stopLocked((await deps.store.get(rec.id)) ?? rec, opts));
    },

    async remove(ref, opts = {}) {
      const rec = await resolve(ref);
      if (rec === undefined) return undefined;
      return mutex.run(rec.id, async () => {
        const cur = await deps.store.get(rec.id);
        return cur === undefined ? undefined : removeLocked(cur, opts.force === true);
      });
    },

    async reconcile() {
      const out: ContainerRecord[] = [];
      for (const r of await deps.store.list()) {
        const cur = await mutex.run(r.id, () => refresh(r));
        if (await unclaimed(cur)) {
          await runtime.remove(cur.id, { force: true });
          continue;
        }
        out.push(cur);
      }
      return out;
    },

    unreadable: () => deps.store.listSetAside(),

    async purge(ref) {
      const aside = await deps.store.listSetAside();
      const byName = NAME_PATTERN.test(ref) ? await deps.store.nameHolder(ref) : undefined;
      const hits = aside.filter((r) => r.id === ref || r.id === byName || (/^[0-9a-f]{3,}$/.test(ref) && r.id.startsWith(ref)));
      if (hits.length > 1) throw new TsnetError('INVALID_CONFIG', `container id prefix ${ref} is ambiguous (${hits.length} unreadable records)`, { details: { field: 'container', value: ref } });
      const hit = hits[0];
      if (hit === undefined) return undefined;
      return mutex.run(hit.id, async () => {
        const st = await readState(hit.id).catch(() => undefined);
        if (st !== undefined) {
          if (st.pid !== null && (await isLive(st.pid, st.pidStartTime, null))) await deps.procs.kill(st.pid, 'SIGKILL');
          if (await shimLive(st)) await deps.procs.kill(st.shimPid, 'SIGKILL', { group: true });
          await poll(KILL_WAIT_MS, async () => ((await shimLive(st)) || (st.pid !== null && (await isLive(st.pid, st.pidStartTime, null))) ? undefined : true));
        }
        const p = pathsOf(hit.id);
        await deps.files.remove(p.dir);
        await deps.files.remove(p.logs);
        await deps.store.discardSetAside(hit.id);
        log.info('removed what was left of a container whose record could not be read', { id: hit.id, record: hit.path });
        return hit.id;
      });
    },

    async collect(ref) {
      const rec = await resolve(ref);
      if (rec === undefined) return false;
      const cur = await mutex.run(rec.id, () => refresh(rec));
      if (!(await unclaimed(cur))) return false;
      await runtime.remove(cur.id, { force: true });
      return true;
    },
  };
  return runtime;
}
