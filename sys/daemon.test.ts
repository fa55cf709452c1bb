import t from 'tap';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nullLogger } from '../core/log.js';
import { runDaemon, type DaemonService } from './daemon.js';
import { daemonFiles, daemonRequest, notifyDaemon } from './daemon-control.js';

function fakeService(log: string[], reloadMs = 0): DaemonService {
  let reloads = 0;
  return {
    name: 'fake',
    start: async () => { log.push('start'); },
    reload: async () => {
      log.push(`reload-begin ${reloads}`);
      await new Promise((r) => setTimeout(r, reloadMs));
      log.push(`reload-end ${reloads++}`);
    },
    stop: async () => { log.push('stop'); },
    status: () => ({ reloads }),
  };
}

/** Starts a daemon and resolves once it serves; `done` settles when it has stopped. */
async function started(dir: string, services: DaemonService[], watchMs?: number): Promise<{ done: Promise<void> }> {
  let ready: () => void = () => undefined;
  const isReady = new Promise<void>((r) => { ready = r; });
  const done = runDaemon({ runDir: dir, log: nullLogger, services, holdLock: (fn) => fn(), onReady: ready, ...(watchMs !== undefined ? { watchMs } : {}) });
  await Promise.race([isReady, done]);
  return { done };
}

t.test('control socket: status, reload acks after a reload that began after the request, stop', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tsnet-daemon-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.equal(await daemonRequest(dir, 'status'), undefined, 'no daemon: undefined, at once');
  await writeFile(daemonFiles(dir).socket, 'stale'); // a dead daemon's leftover
  const log: string[] = [];
  const { done } = await started(dir, [fakeService(log, 50)]);
  t.equal((await readFile(daemonFiles(dir).pid, 'utf8')).trim(), String(process.pid));
  const st = await daemonRequest(dir, 'status');
  t.equal(st?.ok, true);
  t.same(st?.services?.['fake'], { reloads: 0 });
  t.match(st?.services?.['process'], { uptimeSec: Number, rssMiB: Number, heapUsedMiB: Number }, 'and the process\'s footprint');
  t.ok(Number(st?.services?.['process']?.['rssMiB']) > 0);
  // Three reloads requested while the first runs: one more reload covers the other two.
  const first = daemonRequest(dir, 'reload');
  await new Promise((r) => setTimeout(r, 10));
  const more = await Promise.all([daemonRequest(dir, 'reload'), daemonRequest(dir, 'reload'), notifyDaemon({ runDir: dir })]);
  t.same((await first)?.services, { fake: { reloads: 1 } });
  t.same(more.map((r) => r?.services), [{ fake: { reloads: 2 } }, { fake: { reloads: 2 } }, { fake: { reloads: 2 } }], 'acked after the next reload, coalesced');
  t.same(log, ['start', 'reload-begin 0', 'reload-end 0', 'reload-begin 1', 'reload-end 1']);
  t.equal((await daemonRequest(dir, 'stop'))?.ok, true);
  await done;
  t.equal(log.at(-1), 'stop');
  await t.rejects(stat(daemonFiles(dir).socket), { code: 'ENOENT' }, 'socket removed');
  await t.rejects(stat(daemonFiles(dir).pid), { code: 'ENOENT' }, 'pid file removed');
  t.equal(await notifyDaemon({ runDir: dir }), undefined, 'no daemon and no start: nothing to do');
});

t.test('stops when its pid file disappears (run directory removed)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tsnet-daemon-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const log: string[] = [];
  const { done } = await started(dir, [fakeService(log)], 20);
  await rm(daemonFiles(dir).pid);
  await done;
  t.equal(log.at(-1), 'stop');
});

t.test('notifyDaemon starts a daemon when asked, and fails clearly when none comes', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tsnet-daemon-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const log: string[] = [];
  let daemon: Promise<{ done: Promise<void> }> | undefined;
  const r = await notifyDaemon({ runDir: dir, start: async () => { daemon = started(dir, [fakeService(log)]); } });
  t.equal(r?.ok, true);
  t.ok(log.includes('start') && log.some((l) => l.startsWith('reload-end')), 'started, then reloaded for the caller');
  await daemonRequest(dir, 'stop');
  await (await daemon)?.done;
  await t.rejects(notifyDaemon({ runDir: dir, start: async () => undefined, startTimeoutMs: 200 }), { code: 'UNAVAILABLE', message: /did not start within 200 ms; see .*daemon\.log/ });
  const bad = await mkdtemp(join(tmpdir(), 'tsnet-daemon-'));
  t.teardown(() => rm(bad, { recursive: true, force: true }));
  const failing: DaemonService = { ...fakeService([]), reload: async () => { throw new Error('records unreadable'); } };
  const d2 = (await started(bad, [failing])).done;
  await t.rejects(notifyDaemon({ runDir: bad }), { code: 'UNAVAILABLE', message: /reload failed: records unreadable/ });
  await daemonRequest(bad, 'stop');
  await d2;
});
