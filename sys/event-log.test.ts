/** The event log: appends from several writers, bounded rotation, replay of both generations, following across a rotation. */
import t from 'tap';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEventLog } from './event-log.js';

const lock = <T>(_n: string, fn: () => Promise<T>): Promise<T> => fn();

t.test('append, rotate past maxBytes, read both generations, follow through a rotation', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tsnet-events-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const log = createEventLog({ dir: join(dir, 'events'), maxBytes: 2_000, lock });
  const line = (i: number): string => JSON.stringify({ i, pad: 'x'.repeat(80) });
  await Promise.all(Array.from({ length: 10 }, (_x, i) => log.append(line(i))));
  const seen: string[] = [];
  await log.read((l) => seen.push(l));
  t.same(seen.map((l) => (JSON.parse(l) as { i: number }).i).sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'concurrent appends: every line whole');
  for (let i = 10; i < 60; i++) await log.append(line(i));
  const size = (await stat(join(dir, 'events', 'events.jsonl'))).size + (await stat(join(dir, 'events', 'events.1.jsonl'))).size;
  t.ok(size <= 2 * 2_000 + 200, `bounded: two generations of about maxBytes (${size} bytes)`);
  const after: number[] = [];
  await log.read((l) => after.push((JSON.parse(l) as { i: number }).i));
  t.same(after, [...after].sort((a, b) => a - b), 'replayed oldest first');
  t.equal(after.at(-1), 59, 'up to the newest');
  const ac = new AbortController();
  const followed: number[] = [];
  const done = log.read((l) => {
    const i = (JSON.parse(l) as { i: number }).i;
    if (i >= 100) followed.push(i);
    if (i === 139) ac.abort();
  }, ac.signal);
  for (let i = 100; i < 140; i++) {
    await log.append(line(i));
    if (i % 10 === 0) await new Promise((r) => setTimeout(r, 120));
  }
  await done;
  t.same(followed, Array.from({ length: 40 }, (_x, i) => 100 + i), 'following: every new line once, in order, across rotations');
});
