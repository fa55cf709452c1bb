/**
 * The lock helper (lock-proxy.ts) against the abstract-socket lock it stands for, the built helper
 * (dist/lock-proxy.js) as the engine starts it. No root: the helper runs in this namespace here;
 * test/integration/lock-proxy.priv.test.ts runs it in another one.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { abstractSocketLock, createLocker } from './lock.js';
import { proxiedLock } from './lock-proxy.js';

const HELPER = fileURLToPath(new URL('../../dist/lock-proxy.js', import.meta.url));
const scope = (): string => `test-proxy-${randomBytes(8).toString('hex')}`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const never = new AbortController().signal;

t.test('a lock held through the helper excludes a direct holder, and the other way round', async (t) => {
  const s = scope();
  const proxy = proxiedLock([process.execPath, HELPER], s);
  t.teardown(() => proxy.close());
  const direct = createLocker({ crossProcess: abstractSocketLock(s), label: 'direct' });
  const viaProxy = createLocker({ crossProcess: proxy, label: 'proxy' });

  const release = await proxy.acquire('networks', never);
  await t.rejects(direct.withLock('networks', async () => 1, { timeoutMs: 0 }), { code: 'UNAVAILABLE' }, 'held through the helper: a direct try fails');
  const holder = await abstractSocketLock(s).describeHolder('networks');
  t.not(holder['holderPid'], process.pid, `the socket is the helper's (pid ${String(holder['holderPid'])}), not this process's`);
  t.equal(await direct.withLock('other', async () => 'free'), 'free', 'other names are not affected');
  release();
  release();
  t.equal(await direct.withLock('networks', async () => 2, { timeoutMs: 5_000 }), 2, 'released: the direct locker gets it');

  let order: string[] = [];
  const held = direct.withLock('networks', async () => {
    order.push('direct in');
    await sleep(200);
    order.push('direct out');
  });
  await sleep(20);
  await viaProxy.withLock('networks', async () => void order.push('proxy in'), { timeoutMs: 5_000 });
  await held;
  t.same(order, ['direct in', 'direct out', 'proxy in'], 'a proxied waiter waits for the direct holder');

  order = [];
  await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? direct : viaProxy).withLock('n', async () => {
    order.push('in');
    await sleep(1);
    order.push('out');
  })));
  t.equal(order.join(' '), Array.from({ length: 20 }, () => 'in out').join(' '), '20 alternating holders never overlap');
});

t.test('a proxied wait gives up on timeout and abort, naming the holder; the lock stays usable', async (t) => {
  const s = scope();
  const proxy = proxiedLock([process.execPath, HELPER], s);
  t.teardown(() => proxy.close());
  const viaProxy = createLocker({ crossProcess: proxy, label: 'proxy' });
  const releaseDirect = await abstractSocketLock(s).acquire('sandbox:x', never);
  const err = await viaProxy.withLock('sandbox:x', async () => 1, { timeoutMs: 150 }).catch((e: unknown) => e);
  t.match(err, { code: 'UNAVAILABLE', details: { lock: 'sandbox:x', holderPid: process.pid } }, 'timed out, the holder named through the helper');
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 50);
  await t.rejects(viaProxy.withLock('sandbox:x', async () => 1, { signal: ac.signal }), { code: 'UNAVAILABLE', message: /aborted/ });
  releaseDirect();
  t.equal(await viaProxy.withLock('sandbox:x', async () => 3, { timeoutMs: 5_000 }), 3, 'after the holder let go, the helper takes it');
  // A release goes to the helper as a message: another process may find the lock held for that long.
  t.equal(await createLocker({ crossProcess: abstractSocketLock(s), label: 'd' }).withLock('sandbox:x', async () => 4, { timeoutMs: 5_000 }), 4, 'and let it go again (no stale hold in the helper)');
});

t.test('the helper\'s end releases what it held: close(), and this process exiting without a word', async (t) => {
  const s = scope();
  const proxy = proxiedLock([process.execPath, HELPER], s);
  await proxy.acquire('engine', never);
  const direct = createLocker({ crossProcess: abstractSocketLock(s), label: 'direct' });
  await t.rejects(direct.withLock('engine', async () => 1, { timeoutMs: 0 }), { code: 'UNAVAILABLE' });
  await proxy.close();
  t.equal(await direct.withLock('engine', async () => 1, { timeoutMs: 5_000 }), 1, 'close() ended the helper and its hold');
  t.equal(await direct.withLock('engine', async () => 2, { timeoutMs: 0 }), 2);

  // A process that takes a lock through a helper and exits (never closing it): its helper sees
  // stdin end and goes, and an idle helper does not keep that process alive.
  const s2 = scope();
  const script = `
    import { proxiedLock } from ${JSON.stringify(new URL('./lock-proxy.ts', import.meta.url).href)};
    const p = proxiedLock([process.execPath, ${JSON.stringify(HELPER)}], ${JSON.stringify(s2)});
    const release = await p.acquire('a', new AbortController().signal);
    release();
    await p.acquire('b', new AbortController().signal);
    console.log('holding');
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([
    new Promise<number | null>((r) => child.on('exit', (c) => r(c))),
    new Promise<'still running'>((r) => (timer = setTimeout(() => r('still running'), 20_000))),
  ]);
  clearTimeout(timer);
  if (code === 'still running') child.kill('SIGKILL');
  t.equal(code, 0, 'the process exited on its own (the idle helper holds no reference)');
  t.match(out, /holding/);
  const direct2 = createLocker({ crossProcess: abstractSocketLock(s2), label: 'direct' });
  t.equal(await direct2.withLock('b', async () => 'free', { timeoutMs: 5_000 }), 'free', 'the lock it held when it exited is free');
});

t.test('a try (timeout 0) through the helper is one attempt: it wins a free lock, and fails at once on a held one', async (t) => {
  const s = scope();
  const proxy = proxiedLock([process.execPath, HELPER], s);
  t.teardown(() => proxy.close());
  const viaProxy = createLocker({ crossProcess: proxy, label: 'proxy' });
  for (let i = 0; i < 5; i++) t.equal(await viaProxy.withLock('engine', async () => i, { timeoutMs: 0 }), i, `free: taken (${i})`);
  const release = await abstractSocketLock(s).acquire('engine', never);
  await t.rejects(viaProxy.withLock('engine', async () => 1, { timeoutMs: 0 }), { code: 'UNAVAILABLE', message: /not acquired within 0 ms/ });
  release();
  t.equal(await viaProxy.withLock('engine', async () => 'after', { timeoutMs: 0 }), 'after');
});
