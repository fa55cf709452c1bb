import t from 'tap';
import { connect, createServer, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { TsnetError } from '../../core/errors.js';
import { abstractSocketLock, createLocker, findSocketHolder, lockAddress, type CrossProcessLock } from './lock.js';

const scope = (): string => `test-scope-${randomBytes(8).toString('hex')}`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('lockAddress: abstract, deterministic, distinct per scope and name, fits sun_path', async (t) => {
  const a = lockAddress('/var/lib/tsnet\x002049:12\0secret', 'networks');
  t.equal(a, lockAddress('/var/lib/tsnet\x002049:12\0secret', 'networks'));
  t.equal(a[0], '\0', 'abstract namespace');
  t.not(a, lockAddress('/var/lib/tsnet\x002049:13\0secret', 'networks'), 'other inode');
  t.not(a, lockAddress('/var/lib/tsnet\x002049:12\0secret', 'networks2'), 'other name');
  t.ok(Buffer.byteLength(a) < 108);
});

t.test('with a fake cross-process half: release always runs, errors are mapped', async (t) => {
  const calls: string[] = [];
  const fake: CrossProcessLock = {
    async acquire(name) {
      calls.push(`acquire ${name}`);
      return () => calls.push(`release ${name}`);
    },
    describeHolder: async () => ({}),
  };
  const l = createLocker({ crossProcess: fake, label: 'fake' });
  t.equal(await l.withLock('a', async () => 1), 1);
  await t.rejects(l.withLock('b', async () => Promise.reject(new Error('fn failed'))), { message: 'fn failed' });
  t.same(calls, ['acquire a', 'release a', 'acquire b', 'release b'], 'released after success and after failure');

  const broken = createLocker({
    label: 'fake',
    crossProcess: { acquire: async () => Promise.reject(new Error('EPERM bind')), describeHolder: async () => ({}) },
  });
  await t.rejects(broken.withLock('c', async () => 1), { code: 'INTERNAL', message: 'lock c (fake): EPERM bind' });

  const stuck = createLocker({
    label: 'fake',
    crossProcess: {
      acquire: (_n, stop) => new Promise((_r, reject) => stop.addEventListener('abort', () => reject(new Error('stopped')))),
      describeHolder: async () => ({ holderPid: 4242, holderCommand: 'squatter', holderUid: 1000 }),
    },
  });
  const err = await stuck.withLock('d', async () => 1, { timeoutMs: 30 }).catch((e: unknown) => e);
  t.ok(err instanceof TsnetError);
  t.match(err, { code: 'UNAVAILABLE', details: { lock: 'd', timeoutMs: 30, holderPid: 4242 } });
  t.match((err as Error).message, 'lock d (fake): not acquired within 30 ms; held by pid 4242 (squatter, uid 1000)');
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error('shutdown')), 20);
  await t.rejects(stuck.withLock('d', async () => 1, { signal: ac.signal }), { code: 'UNAVAILABLE', message: /aborted/ });
  await t.rejects(stuck.withLock('d', async () => 1, { timeoutMs: -1 }), { code: 'INVALID_CONFIG' });
});

t.test('abstract socket lock: exclusion between lockers, prompt hand-over, release is idempotent', async (t) => {
  const s = scope();
  const x = abstractSocketLock(s);
  const stop = new AbortController().signal;
  const release1 = await x.acquire('n', stop);
  let t1 = 0;
  const second = x.acquire('n', stop).then((r) => {
    t1 = performance.now();
    return r;
  });
  await sleep(50);
  t.equal(t1, 0, 'second waits while the first holds');
  const t0 = performance.now();
  release1();
  release1();
  const release2 = await second;
  t.ok(t1 - t0 < 100, `woken ${(t1 - t0).toFixed(2)} ms after release (event, not polling)`);
  release2();
  const l1 = createLocker({ crossProcess: abstractSocketLock(s), label: 'one' });
  const l2 = createLocker({ crossProcess: abstractSocketLock(s), label: 'two' });
  let inside = 0;
  let max = 0;
  await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      (i % 2 ? l1 : l2).withLock('n', async () => {
        inside++;
        max = Math.max(max, inside);
        await sleep(1);
        inside--;
      }),
    ),
  );
  t.equal(max, 1, 'two lockers (two "processes") never overlap');
});

t.test('a squatter on the name: waiters time out naming its pid; freed when it closes', async (t) => {
  const s = scope();
  const conns: Socket[] = [];
  const squatter = createServer((c) => conns.push(c));
  await new Promise<void>((r) => squatter.listen({ path: lockAddress(s, 'pool') }, r));
  const holder = await findSocketHolder(lockAddress(s, 'pool'));
  t.match(holder, { holderPid: process.pid, holderCommand: /node/, holderUid: process.getuid?.() ?? 0 });
  t.same(await findSocketHolder(lockAddress(s, 'nobody-holds-this')), {}, 'unheld: nothing known');
  const l = createLocker({ crossProcess: abstractSocketLock(s), label: 'sq' });
  const err = await l.withLock('pool', async () => 1, { timeoutMs: 100 }).catch((e: unknown) => e);
  t.match(err, { code: 'UNAVAILABLE', details: { holderPid: process.pid } });
  t.match((err as Error).message, `held by pid ${process.pid}`);
  const waiting = l.withLock('pool', async () => 'mine', { timeoutMs: 2_000 });
  await sleep(30);
  const t0 = performance.now();
  squatter.close();
  for (const c of conns) c.destroy();
  t.equal(await waiting, 'mine', 'the waiter gets the lock once the squatter is gone');
  t.ok(performance.now() - t0 < 500);
});

t.test('the wait queue: waiters get the lock in the order they queued (no herd race)', async (t) => {
  const s = scope();
  const lockers = Array.from({ length: 6 }, (_, i) => createLocker({ crossProcess: abstractSocketLock(s), label: `p${i}` }));
  const order: number[] = [];
  let release!: () => void;
  const first = lockers[0]?.withLock('q', () => new Promise<void>((r) => (release = r)));
  await sleep(20);
  const waiters: Promise<void>[] = [];
  for (let i = 1; i < lockers.length; i++) {
    waiters.push(lockers[i]?.withLock('q', async () => void order.push(i)) ?? Promise.resolve());
    await sleep(40); // each joins after the previous one is queued
  }
  release();
  await first;
  await Promise.all(waiters);
  t.same(order, [1, 2, 3, 4, 5], 'FIFO across "processes"');
});

t.test('the wait queue: a waiter that gives up passes its place on (moveto)', async (t) => {
  const s = scope();
  const [a, b, c] = Array.from({ length: 3 }, (_, i) => createLocker({ crossProcess: abstractSocketLock(s), label: `p${i}` }));
  let release!: () => void;
  const held = a?.withLock('q', () => new Promise<void>((r) => (release = r)));
  await sleep(20);
  const quitter = b?.withLock('q', async () => 'b', { timeoutMs: 150 }).catch((e: unknown) => e);
  await sleep(40);
  const patient = c?.withLock('q', async () => 'c', { timeoutMs: 5_000 });
  t.match(await quitter, { code: 'UNAVAILABLE' }, 'b timed out while queued');
  await sleep(50);
  const t0 = performance.now();
  release();
  await held;
  t.equal(await patient, 'c', 'c, queued behind b, still gets the lock');
  t.ok(performance.now() - t0 < 500, `c acquired ${(performance.now() - t0).toFixed(1)} ms after the release`);
});

/** A raw client of the lock protocol: sends `line`, returns the first line answered. */
async function ask(addr: string, line: string): Promise<{ readonly reply: string; readonly sock: Socket; readonly rest: Promise<string> }> {
  const sock = connect({ path: addr });
  sock.setEncoding('utf8');
  let buf = '';
  let onFirst!: (l: string) => void;
  const first = new Promise<string>((r) => (onFirst = r));
  const rest = new Promise<string>((resolve) => {
    sock.on('data', (d: string) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) onFirst(buf.slice(0, i));
    });
    sock.on('close', () => resolve(buf));
  });
  sock.on('error', () => undefined);
  sock.write(`${line}\n`);
  return { reply: await first, sock, rest };
}

t.test('the wait queue protocol, spoken by hand: join, front, tail', async (t) => {
  const s = scope();
  const lock = abstractSocketLock(s);
  const release = await lock.acquire('p', new AbortController().signal);
  const addr = lockAddress(s, 'p');
  const n1 = 'tsnet-lockq-0000000000000001-aaaaaaaaaaaaaaaa';
  const n2 = 'tsnet-lockq-0000000000000002-aaaaaaaaaaaaaaaa';
  const n3 = 'tsnet-lockq-0000000000000003-aaaaaaaaaaaaaaaa';
  const j1 = await ask(addr, `join ${n1}`);
  t.equal(j1.reply, 'after -', 'first joiner waits on the holder directly');
  const j2 = await ask(addr, `join ${n2}`);
  t.equal(j2.reply, `after ${n1}`, 'next joiner waits behind the tail');
  j2.sock.destroy();
  const f3 = await ask(addr, `front ${n3}`);
  t.equal(f3.reply, `after ${n1}`, 'a front request goes behind the current direct waiter');
  f3.sock.destroy();
  const junk = await Promise.race([ask(addr, 'join ../../etc').then((r) => r.reply), sleep(100).then(() => 'ignored')]);
  t.equal(junk, 'ignored', 'malformed node names get no answer');
  release();
  t.equal(await j1.rest, `after -\ntail ${n2}\n`, 'on release the direct waiter learns the tail, then EOF');
});

t.test('a waiter whose predecessor vanishes without a word still gets the lock', async (t) => {
  const s = scope();
  const addr = lockAddress(s, 'v');
  const lock = abstractSocketLock(s);
  const release = await lock.acquire('v', new AbortController().signal);
  // A fake queued process: it listens on a node and joins, then dies (its node closes, no message).
  const nodeName = 'tsnet-lockq-00000000000000ff-bbbbbbbbbbbbbbbb';
  const conns: Socket[] = [];
  const fakeNode = createServer((c) => conns.push(c));
  await new Promise<void>((r) => fakeNode.listen({ path: `\0${nodeName}` }, r));
  const j = await ask(addr, `join ${nodeName}`);
  t.equal(j.reply, 'after -');
  const waiter = createLocker({ crossProcess: abstractSocketLock(s), label: 'w' }).withLock('v', async () => 'got it', { timeoutMs: 5_000 });
  await sleep(50);
  t.equal(conns.length, 1, 'the real waiter queued behind the fake one');
  fakeNode.close();
  for (const c of conns) c.destroy();
  j.sock.destroy();
  await sleep(50);
  const t0 = performance.now();
  release();
  t.equal(await waiter, 'got it');
  t.ok(performance.now() - t0 < 500, `acquired ${(performance.now() - t0).toFixed(1)} ms after the release`);
});

t.test('a wait aborted before it reaches the holder ends at once, not when the holder lets go', async (t) => {
  const s = scope();
  const release = await abstractSocketLock(s).acquire('n', new AbortController().signal);
  const ac = new AbortController();
  // Aborted while the waiter is between its first try and its wait (its first await).
  const waiting = abstractSocketLock(s).acquire('n', ac.signal);
  ac.abort();
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    waiting.then(() => 'acquired', () => 'gave up'),
    new Promise<string>((r) => (timer = setTimeout(() => r('still waiting on the holder'), 5_000))),
  ]);
  clearTimeout(timer);
  t.equal(outcome, 'gave up');
  release();
  await waiting.catch(() => undefined);
});
