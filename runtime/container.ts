/**
 * The bundled minimal container runtime: a container is a process tree in new UTS, IPC, PID and
 * mount namespaces (optionally chrooted into a rootfs), joined to a network namespace prepared by
 * the networking layer. One detached shim process per container (runtime/shim-main.ts) starts it
 * and records its phases in the container's run directory; this module owns the records and the
 * lifecycle. Records are the source of truth for "which containers exist"; their status is
 * refreshed from the shim's state file and /proc (pid + start time + boot id, so a reused pid is
 * never mistaken for the container) whenever they are read, so `ps` is right after a restart.
 */
import { mkdir, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { constants } from 'node:os';
import { join } from 'node:path';
import { TsnetError, isCode, wrap } from '../core/errors.js';
import { KeyedMutex } from '../core/keyed-mutex.js';
import type { Argv, ExecFailureDetails } from '../sys/exec.js';
import type { ExecOptions, ExecResult, OutputChunk, Runtime, RuntimeDeps, StopOptions } from './api.js';
import {
  ID_PATTERN, ShimSpecSchema, parseContainerSpec, parseShimState,
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
  readonly state: string;
  readonly fstab: string;
  readonly files: string;
  readonly stdout: string;
  readonly stderr: string;
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
  opts: Omit<ExecOptions, 'input' | 'timeoutMs'> = {},
): Argv {
  if (record.pid === null) throw new TsnetError('UNAVAILABLE', `container ${record.name} is not running`);
  const env = Object.entries({ ...record.env, ...opts.env }).map(([k, v]) => {
    if (k === '' || k.includes('=') || k.includes('\0') || v.includes('\0')) throw new TsnetError('INVALID_CONFIG', `exec env: invalid variable ${JSON.stringify(k)}`, { details: { field: 'env', value: k } });
    return `${k}=${v}`;
  });
  for (const a of argv) if (a.includes('\0')) throw new TsnetError('INVALID_CONFIG', 'exec argv: must not contain NUL', { details: { field: 'argv' } });
  const wd = opts.cwd === undefined ? '--wd' : `--wd=/proc/${record.pid}/root${absInside(opts.cwd, 'exec cwd')}`;
  return [tools.env, '-i', '--', ...env, tools.nsenter, '--target', String(record.pid), '--all', '--root', wd, '--', ...argv];
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
      spec: join(dir, 'spec.json'), state: join(dir, 'state.json'), fstab: join(dir, 'fstab'), files: join(dir, 'files'),
      stdout: join(logs, 'stdout.log'), stderr: join(logs, 'stderr.log'),
    };
  };

  async function readState(id: string): Promise<ShimState | undefined> {
    let text: string;
    try {
      text = await readFile(pathsOf(id).state, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw wrap(`read state of container ${id}`, err);
    }
    return parseShimState(JSON.parse(text));
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

  async function save(next: ContainerRecord): Promise<ContainerRecord> {
    try {
      await deps.store.update(next);
    } catch (err) {
      if (!isCode(err, 'NOT_FOUND')) throw err; // removed meanwhile: report what we saw
    }
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
    return JSON.stringify(next) === JSON.stringify(rec) ? rec : save(next);
  }

  async function observe(rec: ContainerRecord): Promise<ContainerRecord> {
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
    const all = await deps.store.list();
    const name = ref.startsWith('/') ? ref.slice(1) : ref;
    const byName = all.find((r) => r.name === name);
    if (byName !== undefined) return byName;
    if (/^[0-9a-f]+$/.test(ref)) {
      const hits = all.filter((r) => r.id.startsWith(ref));
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

  /** Writes the container's run directory: bound files and spec.json. */
  async function prepare(rec: ContainerRecord): Promise<ShimSpec> {
    const p = pathsOf(rec.id);
    await mkdir(p.dir, { recursive: true, mode: 0o700 });
    await mkdir(p.logs, { recursive: true, mode: 0o700 });
    const binds: { source: string; target: string }[] = [];
    let n = 0;
    for (const [target, src] of Object.entries(rec.files)) {
      if ('hostPath' in src) {
        binds.push({ source: src.hostPath, target });
        continue;
      }
      await mkdir(p.files, { recursive: true, mode: 0o755 });
      const source = join(p.files, `${n++}-${target.split('/').filter(Boolean).join('-')}`);
      await writeFile(source, src.content, { mode: 0o644 });
      binds.push({ source, target });
    }
    const spec = ShimSpecSchema.parse({
      schemaVersion: 1, id: rec.id, hostname: rec.hostname, argv: rec.argv, env: rec.env, cwd: rec.cwd,
      rootfs: rec.rootfs, netns: rec.netns, binds, tools: deps.tools,
      paths: { state: p.state, fstab: p.fstab, stdout: p.stdout, stderr: p.stderr },
    });
    await writeFile(p.spec, `${JSON.stringify(spec)}\n`, { mode: 0o600 });
    return spec;
  }

  /** Checks what must exist on the host before anything is recorded. */
  async function checkHost(spec: ReturnType<typeof parseContainerSpec>): Promise<void> {
    const exists = async (path: string, field: string, dir: boolean): Promise<void> => {
      const s = await stat(path).catch(() => undefined);
      if (s === undefined) throw new TsnetError('NOT_FOUND', `${field}: ${path} does not exist`, { details: { field, value: path } });
      if (dir && !s.isDirectory()) throw new TsnetError('INVALID_CONFIG', `${field}: ${path} is not a directory`, { details: { field, value: path } });
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

  async function start(rec: ContainerRecord): Promise<ContainerRecord> {
    const p = pathsOf(rec.id);
    const bootId = await deps.procs.bootId();
    let shimPid: number | undefined;
    try {
      await prepare(rec);
      shimPid = deps.exec.spawnDetached([...deps.shim, p.dir]);
      if (!Number.isInteger(shimPid) || shimPid <= 0) throw new TsnetError('UNAVAILABLE', `could not start the container supervisor (${deps.shim.join(' ')})`);
      const pid = shimPid;
      const st = await poll(startTimeoutMs, async () => {
        const s = await readState(rec.id);
        if (s !== undefined && s.phase !== 'starting') return s;
        const alive = s === undefined ? (await deps.procs.startTime(pid)) !== undefined : await shimLive(s);
        if (alive) return undefined;
        const last = await readState(rec.id); // it may have finished between the two reads
        if (last !== undefined && last.phase !== 'starting') return last;
        throw new TsnetError('UNAVAILABLE', last === undefined
          ? `the container supervisor exited before starting the container (${deps.shim.join(' ')})`
          : 'the container supervisor died while starting the container');
      }, Math.min(pollMs, 2));
      if (st === undefined) throw new TsnetError('UNAVAILABLE', `the container did not start within ${startTimeoutMs} ms`);
      if (st.phase === 'failed') throw new TsnetError('INTERNAL', st.error ?? 'the container failed to start');
      const next: ContainerRecord = st.phase === 'running'
        ? { ...rec, status: 'running', pid: st.pid, pidStartTime: st.pidStartTime, bootId, startedAt: st.startedAt }
        : exitedFrom({ ...rec, bootId }, st);
      try {
        await deps.store.update(next);
      } catch (err) {
        if (isCode(err, 'NOT_FOUND')) throw new TsnetError('NOT_FOUND', `container ${rec.name} was removed while it was starting`);
        throw err;
      }
      log.info('container started', { container: rec.name, id: rec.id, pid: next.pid, status: next.status });
      return next;
    } catch (err) {
      const st = await readState(rec.id).catch(() => undefined);
      await killStart(shimPid, st, bootId).catch((e: unknown) => log.warn('cleanup after failed start', { container: rec.name, err: e }));
      const msg = err instanceof Error ? err.message : String(err);
      if (isCode(err, 'NOT_FOUND') && (await deps.store.get(rec.id)) === undefined) {
        await rm(p.dir, { recursive: true, force: true });
        await rm(p.logs, { recursive: true, force: true });
      } else {
        await save({ ...rec, status: 'exited', finishedAt: now(), exitCode: null, error: msg }).catch(() => undefined);
      }
      throw wrap(`run ${rec.name}`, err);
    }
  }

  async function readFrom(path: string, offset: number): Promise<Buffer> {
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return Buffer.alloc(0);
      throw err;
    }
    try {
      const buf = Buffer.alloc(READ_CHUNK);
      const { bytesRead } = await fh.read(buf, 0, READ_CHUNK, offset);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

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
      if ((await untilDead(rec, timeoutSec * 1000)) === undefined) {
        log.info('container did not stop in time; killing it', { container: rec.name, signal, timeoutSec });
        await signalContainer(rec, 'SIGKILL');
        if ((await untilDead(rec, KILL_WAIT_MS)) === undefined) throw new TsnetError('UNAVAILABLE', `container ${rec.name} (pid ${String(rec.pid)}) survived SIGKILL`);
      }
    }
    const done = await settle(rec);
    log.info('container stopped', { container: rec.name, exitCode: done.exitCode, ms: deps.clock.now().getTime() - t0 });
    return done;
  }

  async function removeLocked(rec0: ContainerRecord, force: boolean): Promise<ContainerRecord> {
    let rec = await refresh(rec0);
    const st = await readState(rec.id);
    const starting = rec.status === 'created' && (st === undefined ? true : await shimLive(st));
    if ((rec.status === 'running' || starting) && !force) {
      throw new TsnetError('UNAVAILABLE', `container ${rec.name} is ${rec.status === 'running' ? 'running' : 'starting'}: stop it first, or remove it with force`, { details: { field: 'container', value: rec.name } });
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
    await rm(p.dir, { recursive: true, force: true });
    await rm(p.logs, { recursive: true, force: true });
    await deps.store.delete(rec.id);
    log.info('container removed', { container: rec.name, id: rec.id });
    return rec;
  }

  const runtime: Runtime = {
    async run(input: ContainerSpecInput, opts = {}) {
      const spec = parseContainerSpec(input);
      const id = spec.id ?? deps.randomHex(32);
      if (!ID_PATTERN.test(id)) throw new TsnetError('INTERNAL', `generated container id ${id} is not 64 hex digits`);
      const hostname = spec.hostname ?? id.slice(0, 12);
      await checkHost(spec);
      const rec: ContainerRecord = {
        schemaVersion: 1,
        id,
        name: spec.name ?? `tsnet-${id.slice(0, 12)}`,
        hostname,
        argv: spec.argv,
        env: { PATH: DEFAULT_PATH, HOSTNAME: hostname, HOME: '/root', ...spec.env },
        cwd: spec.cwd,
        rootfs: spec.rootfs ?? null,
        netns: spec.netns,
        files: spec.files,
        labels: spec.labels,
        autoRemove: spec.autoRemove,
        createdAt: now(),
        status: 'created',
        pid: null, pidStartTime: null, bootId: null, startedAt: null, finishedAt: null, exitCode: null, error: null,
      };
      await deps.store.insert(rec); // before any process exists: nothing runs without a record
      const started = await mutex.run(id, () => start(rec));
      if (opts.detach !== false) return { detached: true, container: started };
      for await (const chunk of logs(id, { follow: true })) opts.onOutput?.(chunk);
      const exitCode = await waitExit(id);
      const final = await runtime.inspect(id);
      if (final.autoRemove) await runtime.remove(id, { force: true });
      return { detached: false, container: final, exitCode };
    },

    async execArgv(ref, argv, opts = {}) {
      const rec = await refresh(await mustResolve(ref));
      if (rec.status !== 'running') throw new TsnetError('UNAVAILABLE', `container ${rec.name} is not running`, { details: { field: 'container', value: rec.name } });
      return execArgvFor(rec, deps.tools, argv, opts);
    },

    async exec(ref, argv, opts = {}): Promise<ExecResult> {
      const full = await runtime.execArgv(ref, argv, opts);
      try {
        const r = await deps.exec.run(full, {
          ...(opts.input !== undefined ? { input: opts.input } : {}),
          ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
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

    async list() {
      const all = await deps.store.list();
      const out: ContainerRecord[] = [];
      for (const r of all) out.push(await refresh(r));
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
        if (cur.status === 'exited' && cur.autoRemove) {
          await runtime.remove(cur.id);
          continue;
        }
        out.push(cur);
      }
      return out;
    },
  };
  return runtime;
}
