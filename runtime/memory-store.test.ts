import t from 'tap';
import { createMemoryContainerStore } from './memory-store.js';
import type { ContainerRecord } from './spec.js';

const rec = (id: string, name: string): ContainerRecord => ({
  schemaVersion: 1, id: id.repeat(64), name, hostname: 'h', argv: ['x'], env: {}, cwd: '/', rootfs: null,
  netns: { kind: 'host' }, files: {}, labels: {}, autoRemove: false, createdAt: '2024-01-01T00:00:00.000Z', status: 'created',
  pid: null, pidStartTime: null, bootId: null, startedAt: null, finishedAt: null, exitCode: null, error: null,
  tty: false, openStdin: false, init: false, config: {}, foreground: null, restartCount: 0,
});

t.test('memory store: unique ids and names, strict records, copies, idempotent delete', async (t) => {
  const s = createMemoryContainerStore();
  const a = rec('a', 'one');
  await s.insert(a);
  await t.rejects(s.insert(rec('a', 'two')), { code: 'ALREADY_EXISTS', message: /id/ });
  await t.rejects(s.insert(rec('b', 'one')), { code: 'ALREADY_EXISTS', message: /name one/ });
  await t.rejects(s.insert({ ...rec('c', 'x'), status: 'bogus' } as unknown as ContainerRecord), { code: 'INTERNAL' });
  await t.rejects(s.update(rec('d', 'four')), { code: 'NOT_FOUND' });
  await t.rejects(s.update({ ...a, name: 'renamed' }), { code: 'INVALID_CONFIG' });
  const got = await s.get(a.id);
  t.same(got, a);
  if (got) (got.labels as Record<string, string>)['mutated'] = 'yes';
  t.same((await s.get(a.id))?.labels, {}, 'returned records are copies');
  await s.update({ ...a, status: 'running' });
  t.equal((await s.get(a.id))?.status, 'running');
  t.equal((await s.list()).length, 1);
  await s.delete(a.id);
  await s.delete(a.id);
  t.same(await s.list(), []);
  await s.insert(rec('b', 'one'));
  t.equal((await s.list())[0]?.name, 'one', 'a removed name can be reused');
});
