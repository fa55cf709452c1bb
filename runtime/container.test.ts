/**
 * The runtime's lifecycle over fakes: a memory store, a fake process table, and a fake
 * `spawnDetached` that plays the shim by writing state.json (and log files) in a temp run dir.
 */
import t, { type Test } from 'tap';
import { mkdtemp, readFile, rm, stat, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TsnetError } from '../core/errors.js';
import { nullLogger } from '../core/log.js';
import type { Argv, RunOptions, RunResult } from '../sys/api.js';
import type { ContainerStore, ProcessTable, RuntimeDeps } from './api.js';
import { localFiles } from '../sys/files.js';
import { createRuntime, execArgvFor } from './container.js';
import { createMemoryContainerStore } from './memory-store.js';
import { parseShimState, ShimSpecSchema, type ContainerRecord, type ShimSpec, type ShimState } from './spec.js';

const tools = { env: '/e/env', nsenter: '/e/nsenter', unshare: '/e/unshare', mount: '/e/mount', hostname: '/e/hostname', cat: '/e/cat' };

interface FakeProc {
  startTime: string;
  alive: boolean;
  onSignal?: (sig: NodeJS.Signals) => void;
}

type Behavior = (w: World, dir: string, shimPid: number) => Promise<void>;

class World {
  readonly procs = new Map<number, FakeProc>();
  readonly signals: string[] = [];
  readonly runs: Argv[] = [];
  readonly spawned: Argv[] = [];
  readonly removed: string[] = [];
  bootId = 'boot-1';
  nextPid = 1000;
  behavior: Behavior = runsUntilSignalled({ honourTerm: true });
  runResult: (argv: Argv) => Promise<RunResult> = async () => ({ stdout: 'out', stderr: '' });
  onRemove: (r: ContainerRecord) => Promise<void> = async (r) => {
    this.removed.push(r.name);
  };
  atSpawn: (dir: string) => Promise<void> = async () => undefined;

  readonly runDir: string;
  readonly store: ContainerStore;
  constructor(runDir: string, store: ContainerStore) {
    this.runDir = runDir;
    this.store = store;
  }

  spawn(startTime = '100'): number {
    const pid = this.nextPid++;
    this.procs.set(pid, { startTime, alive: true });
    return pid;
  }

  readonly procTable: ProcessTable = {
    startTime: async (pid) => {
      const p = this.procs.get(pid);
      return p?.alive === true ? p.startTime : undefined;
    },
    kill: async (pid, sig, opts = {}) => {
      this.signals.push(`${opts.group === true ? '-' : ''}${pid} ${sig}`);
      const p = this.procs.get(pid);
      if (p?.alive !== true) return false;
      if (opts.group === true && sig === 'SIGKILL') p.alive = false;
      p.onSignal?.(sig);
      return true;
    },
    bootId: async () => this.bootId,
  };

  deps(over: Partial<RuntimeDeps> = {}): RuntimeDeps {
    return {
      store: this.store,
      procs: this.procTable,
      files: localFiles,
      exec: {
        run: (argv: Argv, _opts?: RunOptions) => {
          this.runs.push(argv);
          return this.runResult(argv);
        },
        spawnDetached: (argv: Argv) => {
          this.spawned.push(argv);
          const dir = argv[argv.length - 1] ?? '';
          const shimPid = this.spawn('50');
          setImmediate(() => {
            void this.atSpawn(dir).then(() => this.behavior(this, dir, shimPid));
          });
          return shimPid;
        },
      },
      clock: { now: () => new Date(), sleep: (ms) => new Promise((r) => setTimeout(r, ms)) },
      log: nullLogger,
      randomHex: (n) => Array.from({ length: n * 2 }, (_, i) => 'abcdef0123456789'[(i * 7 + this.nextPid) % 16]).join(''),
      runDir: this.runDir,
      shim: ['/usr/bin/node', '/opt/tsnet/shim-main.js'],
      tools,
      onRemove: (r) => this.onRemove(r),
      startTimeoutMs: 3000,
      pollMs: 2,
      ...over,
    };
  }
}

async function writeState(dir: string, st: Partial<ShimState> & Pick<ShimState, 'phase' | 'shimPid'>): Promise<void> {
  const full: ShimState = { shimStartTime: '50', pid: null, pidStartTime: null, startedAt: null, finishedAt: null, exitCode: null, error: null, ...st };
  await writeFile(join(dir, 'state.json.tmp'), JSON.stringify(parseShimState(full)));
  const { rename } = await import('node:fs/promises');
  await rename(join(dir, 'state.json.tmp'), join(dir, 'state.json'));
}

async function readSpec(dir: string): Promise<ShimSpec> {
  return ShimSpecSchema.parse(JSON.parse(await readFile(join(dir, 'spec.json'), 'utf8')));
}

/** The shim: starts the container (a fake pid) that exits on SIGKILL, and on SIGTERM if it honours it. */
function runsUntilSignalled(o: { honourTerm: boolean; output?: { stdout?: string; stderr?: string } }): Behavior {
  return async (w, dir, shimPid) => {
    const spec = await readSpec(dir);
    if (o.output?.stdout !== undefined) await appendFile(spec.paths.stdout, o.output.stdout);
    if (o.output?.stderr !== undefined) await appendFile(spec.paths.stderr, o.output.stderr);
    const pid = w.spawn('777');
    const startedAt = new Date().toISOString();
    const proc = w.procs.get(pid);
    const exit = (code: number): void => {
      if (proc === undefined || !proc.alive) return;
      proc.alive = false;
      void writeState(dir, { phase: 'exited', shimPid, pid, pidStartTime: '777', startedAt, finishedAt: new Date().toISOString(), exitCode: code })
        .catch(() => undefined) // the run directory may be gone already
        .then(() => {
          const shim = w.procs.get(shimPid);
          if (shim) shim.alive = false;
        });
    };
    if (proc) proc.onSignal = (sig) => {
      if (sig === 'SIGKILL') exit(137);
      if (sig === 'SIGTERM' && o.honourTerm) exit(143);
    };
    await writeState(dir, { phase: 'running', shimPid, pid, pidStartTime: '777', startedAt });
  };
}

/** The shim: the container writes output and exits with `code` at once. */
function exitsWith(code: number, out: string, err: string): Behavior {
  return async (w, dir, shimPid) => {
    const spec = await readSpec(dir);
    await appendFile(spec.paths.stdout, out);
    await appendFile(spec.paths.stderr, err);
    const pid = w.spawn('778');
    const p = w.procs.get(pid);
    if (p) p.alive = false;
    const shim = w.procs.get(shimPid);
    await writeState(dir, { phase: 'exited', shimPid, pid, pidStartTime: '778', startedAt: new Date().toISOString(), finishedAt: new Date().toISOString(), exitCode: code });
    if (shim) shim.alive = false;
  };
}

async function world(t: Test): Promise<World> {
  const dir = await mkdtemp(join(tmpdir(), 'tsnet-rt-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return new World(dir, createMemoryContainerStore());
}

const HOST = { kind: 'host' } as const;

t.test('run (detached): record first, then the shim; spec.json carries everything', async (t) => {
  const w = await world(t);
  const rt = createRuntime(w.deps());
  let statusAtSpawn: string | undefined;
  w.atSpawn = async () => {
    statusAtSpawn = (await w.store.list())[0]?.status;
  };
  const out = await rt.run({
    name: 'web', argv: ['/bin/sleep', '30'], env: { A: '1', PATH: '/custom' }, netns: { kind: 'path', path: w.runDir },
    files: { '/etc/hosts': { content: '10.0.0.2 web\n' }, '/etc/resolv.conf': { hostPath: '/dev/null' } },
  });
  t.equal(statusAtSpawn, 'created', 'the record exists (created) before the process starts');
  t.equal(out.detached, true);
  const c = out.container;
  t.equal(c.status, 'running');
  t.equal(c.pid, 1001);
  t.equal(c.pidStartTime, '777');
  t.equal(c.bootId, 'boot-1');
  t.equal(c.hostname, c.id.slice(0, 12), 'hostname defaults to the short id');
  t.same(c.env, { PATH: '/custom', HOSTNAME: c.hostname, HOME: '/root', A: '1' });
  t.same(w.spawned, [['/usr/bin/node', '/opt/tsnet/shim-main.js', join(w.runDir, c.id)]]);
  const spec = await readSpec(join(w.runDir, c.id));
  t.same(spec.tools, tools);
  t.same(spec.netns, { kind: 'path', path: w.runDir });
  t.equal(spec.binds.length, 2);
  const hosts = spec.binds.find((b) => b.target === '/etc/hosts');
  t.equal(await readFile(hosts?.source ?? '', 'utf8'), '10.0.0.2 web\n', 'content files are written for binding');
  t.same(spec.binds.find((b) => b.target === '/etc/resolv.conf'), { source: '/dev/null', target: '/etc/resolv.conf' });
  t.same((await rt.inspect('web')).id, c.id, 'by name');
  t.same((await rt.inspect(c.id.slice(0, 5))).name, 'web', 'by id prefix');
  t.same((await rt.list()).map((r) => [r.name, r.status]), [['web', 'running']]);
});

t.test('run: validation before any record; names are unique', async (t) => {
  const w = await world(t);
  const rt = createRuntime(w.deps());
  await t.rejects(rt.run({ argv: [], netns: HOST }), { code: 'INVALID_CONFIG' });
  await t.rejects(rt.run({ name: 'x', argv: ['y'], netns: HOST, rootfs: '/does/not/exist' }), { code: 'NOT_FOUND', message: /rootfs/ });
  await t.rejects(rt.run({ name: 'x', argv: ['y'], netns: HOST, rootfs: '/etc/hostname' }), { code: 'INVALID_CONFIG', message: /not a directory/ });
  await t.rejects(rt.run({ name: 'x', argv: ['y'], netns: { kind: 'path', path: '/no/such/netns' } }), { code: 'NOT_FOUND', message: /netns/ });
  await t.rejects(rt.run({ name: 'x', argv: ['y'], netns: HOST, files: { '/etc/hosts': { hostPath: '/no/such' } } }), { code: 'NOT_FOUND' });
  t.same(await w.store.list(), [], 'nothing recorded');
  t.same(w.spawned, []);
  await rt.run({ name: 'dup', argv: ['y'], netns: HOST });
  await t.rejects(rt.run({ name: 'dup', argv: ['y'], netns: HOST }), { code: 'ALREADY_EXISTS' });
  t.equal(w.spawned.length, 1, 'no second process');
  await t.rejects(rt.inspect('nope'), { code: 'NOT_FOUND' });
});

t.test('run: failures leave an exited record with the reason and kill what started', async (t) => {
  const w = await world(t);
  const rt = createRuntime(w.deps());
  w.behavior = async (_w, _dir, shimPid) => {
    const p = w.procs.get(shimPid);
    if (p) p.alive = false; // the shim dies without a word
  };
  await t.rejects(rt.run({ name: 'a', argv: ['x'], netns: HOST }), { code: 'UNAVAILABLE', message: /run a: the container supervisor exited/ });
  const a = await rt.inspect('a');
  t.equal(a.status, 'exited');
  t.match(a.error, /supervisor exited/);
  t.equal(a.exitCode, null);

  w.behavior = async (_w, dir, shimPid) => writeState(dir, { phase: 'failed', shimPid, error: 'nsenter: cannot open /x: No such file' });
  await t.rejects(rt.run({ name: 'b', argv: ['x'], netns: HOST }), { message: /run b: nsenter: cannot open/ });
  t.match((await rt.inspect('b')).error, /cannot open/);

  w.signals.length = 0;
  w.behavior = async (_w, dir, shimPid) => writeState(dir, { phase: 'starting', shimPid }); // hangs
  const impatient = createRuntime(w.deps({ startTimeoutMs: 300 }));
  await t.rejects(impatient.run({ name: 'c', argv: ['x'], netns: HOST }), { code: 'UNAVAILABLE', message: /did not start within 300 ms/ });
  t.ok(w.signals.some((s) => /^-\d+ SIGKILL$/.test(s)), `the hanging shim's process group is killed (${w.signals.join(', ')})`);
  t.equal((await rt.inspect('c')).status, 'exited');
});

t.test('run: a container removed while starting is killed, never left running unrecorded', async (t) => {
  const w = await world(t);
  const rt = createRuntime(w.deps());
  w.behavior = async (ww, dir, shimPid) => {
    await runsUntilSignalled({ honourTerm: true })(ww, dir, shimPid);
    for (const r of await w.store.list()) await w.store.delete(r.id);
  };
  await t.rejects(rt.run({ name: 'gone', argv: ['x'], netns: HOST }), { code: 'NOT_FOUND', message: /removed while it was starting/ });
  const ctr = [...w.procs.entries()].find(([, p]) => p.startTime === '777');
  t.equal(ctr?.[1].alive, false, 'the started process was killed');
  const { readdir } = await import('node:fs/promises');
  t.same(await readdir(w.runDir), [], 'and its run directory removed');
});

t.test('stop: SIGTERM honoured, SIGTERM ignored (SIGKILL after the timeout), idempotent', async (t) => {
  const w = await world(t);
  const rt = createRuntime(w.deps());
  const a = (await rt.run({ name: 'a', argv: ['x'], netns: HOST })).container;
  const s = await rt.stop('a');
  t.equal(s.status, 'exited');
  t.equal(s.exitCode, 143);
  t.same(w.signals, [`${a.pid} SIGTERM`]);
  w.signals.length = 0;
  t.equal((await rt.stop('a')).exitCode, 143, 'stopping an exited container is a no-op');
  t.same(w.signals, []);

  w.behavior = runsUntilSignalled({ honourTerm: false });
  const b = (await rt.run({ name: 'b', argv: ['x'], netns: HOST })).container;
  const t0 = Date.now();
  const sb = await rt.stop('b', { timeoutSec: 0.1 });
  t.ok(Date.now() - t0 >= 100, 'waited for the timeout');
  t.equal(sb.exitCode, 137);
  t.same(w.signals, [`${b.pid} SIGTERM`, `${b.pid} SIGKILL`]);
  await t.rejects(rt.stop('b', { signal: 'SIGNOPE' as NodeJS.Signals }), { code: 'INVALID_CONFIG' });
  await t.rejects(rt.stop('zzz'), { code: 'NOT_FOUND' });
});

t.test('an exit: the network goes before the record says "exited"; die is reported once', async (t) => {
  const w = await world(t);
  const seen: string[] = [];
  const events: string[] = [];
  const rt = createRuntime(w.deps({
    onExit: async (r) => void seen.push(`${r.name} ${(await w.store.get(r.id))?.status ?? 'gone'}`),
    onEvent: (e) => void events.push(`${e.action} ${e.container.name}`),
  }));
  await rt.run({ name: 'a', argv: ['x'], netns: HOST });
  await rt.stop('a');
  t.same(seen, ['a running'], 'the exit hook ran while the stored record still said running');
  t.equal((await rt.inspect('a')).status, 'exited');
  await rt.stop('a');
  await rt.inspect('a');
  t.same(events.filter((e) => e.startsWith('die')), ['die a'], 'one die');
  t.same(seen, ['a running'], 'and one release');
});

t.test('remove: refuses a running container, force kills; hook once; idempotent; a failing hook keeps the record', async (t) => {
  const w = await world(t);
  const rt = createRuntime(w.deps());
  const c = (await rt.run({ name: 'a', argv: ['x'], netns: HOST })).container;
  await t.rejects(rt.remove('a'), { code: 'ALREADY_EXISTS', message: /running/ });
  t.same(w.removed, []);
  const r = await rt.remove('a', { force: true });
  t.equal(r?.status, 'exited');
  t.equal(r?.exitCode, 137);
  t.ok(w.signals.includes(`${c.pid} SIGKILL`));
  t.same(w.removed, ['a'], 'the hook ran once, with the record');
  t.same(await w.store.list(), []);
  await t.rejects(stat(join(w.runDir, c.id)), { code: 'ENOENT' }, 'run directory removed');
  t.equal(await rt.remove('a'), undefined, 'removing again succeeds');
  t.equal(await rt.remove(c.id, { force: true }), undefined);
  t.same(w.removed, ['a'], 'the hook did not run again');

  await rt.run({ name: 'b', argv: ['x'], netns: HOST });
  await rt.stop('b');
  w.onRemove = async () => {
    throw new TsnetError('INTERNAL', 'endpoint busy');
  };
  await t.rejects(rt.remove('b'), { message: 'remove b: endpoint busy' });
  t.equal((await rt.inspect('b')).status, 'exited', 'the record stays, so remove can be retried');
  w.onRemove = async () => undefined;
  t.equal((await rt.remove('b'))?.name, 'b');
  t.same(await w.store.list(), []);
});

t.test('reconcile after a restart: dead, reused and rebooted pids; interrupted starts; --rm', async (t) => {
  const w = await world(t);
  const rt = createRuntime(w.deps());
  const a = (await rt.run({ name: 'a', argv: ['x'], netns: HOST })).container;
  const b = (await rt.run({ name: 'b', argv: ['x'], netns: HOST })).container;
  const c = (await rt.run({ name: 'c', argv: ['x'], netns: HOST })).container;
  const d = (await rt.run({ name: 'd', argv: ['x'], netns: HOST, autoRemove: true })).container;
  // a: process and shim both gone (no exit recorded)
  for (const p of w.procs.values()) if (p.startTime === '50') p.alive = false;
  const pa = w.procs.get(a.pid ?? 0);
  if (pa) pa.alive = false;
  // b: its pid now belongs to another process
  const pb = w.procs.get(b.pid ?? 0);
  if (pb) pb.startTime = '999';
  // d: exited normally (the shim recorded it)
  w.procs.get(d.pid ?? 0)?.onSignal?.('SIGKILL');
  await new Promise((r) => setTimeout(r, 20));
  // e: tsnet died after the shim started the container, before recording it
  const e = (await rt.run({ name: 'e', argv: ['x'], netns: HOST })).container;
  await w.store.update({ ...e, status: 'created', pid: null, pidStartTime: null, bootId: null, startedAt: null });
  // f: tsnet died before starting the shim, long ago; g: the same, just now (maybe still starting elsewhere)
  const old = new Date(Date.now() - 60_000).toISOString();
  const tmpl = { ...e, status: 'created' as const, pid: null, pidStartTime: null, bootId: null, startedAt: null };
  await w.store.insert({ ...tmpl, id: 'f'.repeat(64), name: 'f', createdAt: old });
  await w.store.insert({ ...tmpl, id: '9'.repeat(64), name: 'g', createdAt: new Date().toISOString() });

  const rt2 = createRuntime(w.deps()); // "after the restart": nothing but the store and the run dir
  const all = await rt2.reconcile();
  const by = (n: string): ContainerRecord | undefined => all.find((r) => r.name === n);
  t.match(by('a'), { status: 'exited', exitCode: null });
  t.match(by('b'), { status: 'exited' }, 'a reused pid is not mistaken for the container');
  t.match(by('c'), { status: 'running', pid: c.pid });
  t.equal(by('d'), undefined, 'exited --rm container removed');
  t.ok(w.removed.includes('d'), 'through the hook');
  t.match(by('e'), { status: 'running', pid: e.pid }, 'a container started by an interrupted run is found');
  t.match(by('f'), { status: 'exited', error: /never started/ });
  t.match(by('g'), { status: 'created' });
  t.same((await w.store.get(a.id))?.status, 'exited', 'persisted');

  w.bootId = 'boot-2';
  t.match(await rt2.inspect('c'), { status: 'exited' }, 'after a reboot no pid is trusted');
});

t.test('exec: argv, environment, exit codes', async (t) => {
  const w = await world(t);
  const rt = createRuntime(w.deps());
  const c = (await rt.run({ name: 'a', argv: ['x'], netns: HOST, env: { A: '1' } })).container;
  const r = await rt.exec('a', ['/bin/cat', '/etc/hosts'], { env: { B: '2', A: 'over' }, cwd: '/etc', input: 'in' });
  t.same(r, { exitCode: 0, stdout: 'out', stderr: '' });
  t.same(w.runs[0], [
    '/e/env', '-i', '--', `PATH=${c.env['PATH']}`, `HOSTNAME=${c.hostname}`, 'HOME=/root', 'A=over', 'B=2',
    '/e/nsenter', '--target', String(c.pid), '--all', '--root', `--wd=/proc/${c.pid}/root/etc`, '--', '/bin/cat', '/etc/hosts',
  ]);
  t.same((await rt.execArgv('a', ['ls'])).slice(-4), ['--root', '--wd', '--', 'ls'], 'default cwd: the process\'s own');
  w.runResult = async (argv) => {
    throw new TsnetError('INTERNAL', 'x', { details: { argv, exitCode: 3, signal: null, stdout: 'o', stderr: 'e' } });
  };
  t.same(await rt.exec('a', ['false']), { exitCode: 3, stdout: 'o', stderr: 'e' });
  w.runResult = async (argv) => {
    throw new TsnetError('INTERNAL', 'x', { details: { argv, exitCode: null, signal: 'SIGKILL', stdout: '', stderr: '' } });
  };
  t.equal((await rt.exec('a', ['x'])).exitCode, 137);
  w.runResult = async () => {
    throw new TsnetError('UNAVAILABLE', 'nsenter: not installed');
  };
  await t.rejects(rt.exec('a', ['x']), { code: 'UNAVAILABLE', message: /exec in a/ });
  t.throws(() => execArgvFor(c, tools, ['x'], { cwd: '/a/../../etc' }), { code: 'INVALID_CONFIG' });
  t.throws(() => execArgvFor(c, tools, ['x'], { env: { 'A=B': '1' } }), { code: 'INVALID_CONFIG' });
  await rt.stop('a');
  await t.rejects(rt.exec('a', ['x']), { code: 'UNAVAILABLE', message: /not running/ });
});

t.test('foreground run streams output, returns the exit code, honours --rm; logs', async (t) => {
  const w = await world(t);
  const rt = createRuntime(w.deps());
  w.behavior = exitsWith(7, 'hello\n', 'oops\n');
  const chunks: string[] = [];
  const out = await rt.run({ name: 'fg', argv: ['x'], netns: HOST }, { detach: false, onOutput: (c) => chunks.push(`${c.stream}:${c.data.toString()}`) });
  t.equal(out.detached, false);
  t.equal(out.detached === false ? out.exitCode : undefined, 7);
  t.same(chunks.sort(), ['stderr:oops\n', 'stdout:hello\n']);
  const logged: string[] = [];
  for await (const c of rt.logs('fg')) logged.push(`${c.stream}:${c.data.toString()}`);
  t.same(logged, ['stdout:hello\n', 'stderr:oops\n']);
  t.equal(await rt.wait('fg'), 7);

  const rm = await rt.run({ name: 'rm', argv: ['x'], netns: HOST, autoRemove: true }, { detach: false });
  t.equal(rm.detached === false ? rm.exitCode : undefined, 7);
  t.equal(await w.store.get(rm.container.id), undefined, '--rm removed it');
  t.ok(w.removed.includes('rm'));

  // follow ends when the container exits
  w.behavior = runsUntilSignalled({ honourTerm: true, output: { stdout: 'a\n' } });
  await rt.run({ name: 'f', argv: ['x'], netns: HOST });
  const followed: string[] = [];
  const done = (async () => {
    for await (const c of rt.logs('f', { follow: true })) followed.push(c.data.toString());
  })();
  await new Promise((r) => setTimeout(r, 30));
  const state = parseShimState(JSON.parse(await readFile(join(w.runDir, (await rt.inspect('f')).id, 'state.json'), 'utf8')));
  const { appendFile: af } = await import('node:fs/promises');
  await af(join(w.runDir, (await rt.inspect('f')).id, 'stdout.log'), 'b\n');
  t.equal(state.phase, 'running');
  await rt.stop('f');
  await done;
  t.same(followed.join(''), 'a\nb\n');
});
