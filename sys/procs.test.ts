import t from 'tap';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostProcessTable, resolveTools } from './procs.js';
import { parseProcStat, readProcStat } from './proc-stat.js';
import { RUNTIME_TOOLS } from '../runtime/spec.js';

t.test('parseProcStat handles odd command names', async (t) => {
  const tail = 'S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21';
  t.same(parseProcStat(`123 (a b) c)) ${tail}`), { pid: 123, comm: 'a b) c)', state: 'S', ppid: 1, startTime: '987654' });
  t.equal(parseProcStat('garbage'), undefined);
  t.equal(parseProcStat('1 (x) S 1'), undefined);
});

t.test('the real process table: own process, absent pids, boot id', async (t) => {
  const procs = hostProcessTable();
  const st = await readProcStat(process.pid);
  t.ok(st, 'own stat readable');
  t.equal(await procs.startTime(process.pid), st?.startTime);
  t.match(await procs.startTime(process.pid), /^\d+$/);
  t.equal(await procs.startTime(2 ** 22 + 1), undefined, 'no such pid');
  t.equal(await procs.kill(2 ** 22 + 1, 'SIGTERM'), false, 'ESRCH is false');
  t.equal(await procs.kill(process.pid, 0 as unknown as NodeJS.Signals), true, 'signal 0 probes');
  await t.rejects(procs.kill(1, 'SIGKILL'), { code: 'INVALID_CONFIG' }, 'never signals init or groups 0/1');
  t.match(await procs.bootId(), /^[0-9a-f-]{36}$/);
});

t.test('resolveTools finds every tool or names the missing ones', async (t) => {
  const tools = await resolveTools(RUNTIME_TOOLS, '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  for (const p of Object.values(tools)) t.match(p, /^\//);
  const dir = await mkdtemp(join(tmpdir(), 'tools-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'env'), '');
  await chmod(join(dir, 'env'), 0o755);
  await t.rejects(resolveTools(RUNTIME_TOOLS, `${dir}:relative`), { code: 'UNAVAILABLE', message: /nsenter, unshare, mount, hostname, cat/ });
  t.same(await resolveTools(RUNTIME_TOOLS, `${dir}:/usr/bin:/bin:/usr/sbin:/sbin`).then((r) => r.env), join(dir, 'env'), 'first hit wins');
});
