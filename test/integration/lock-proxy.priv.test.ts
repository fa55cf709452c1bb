/**
 * A process outside the namespace playing host shares the store's locks with the CLI, the plugins
 * and the daemon inside it (sys/store/lock-proxy.ts). This test process is such a process: the
 * isolated host's namespace is not its own, as for a library given `hostNetns`. Found in CI: the
 * daemon's recovery took a sandbox lock the library held (abstract socket names are per network
 * namespace) and removed the namespace file of the sandbox the library was making.
 */
import t from 'tap';
import { readdir, readFile, readlink, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { inNetns } from '../../sys/exec.js';
import { inOwnNetns } from '../../sys/netns.js';
import { openFsStore } from '../../sys/store/fs.js';
import { proxiedLock, type ProxiedLock } from '../../sys/store/lock-proxy.js';
import { cliFor, okCli } from '../helpers/cli.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';

const HELPER = fileURLToPath(new URL('../../dist/lock-proxy.js', import.meta.url));
const LIB = fileURLToPath(new URL('../../dist/lib.js', import.meta.url));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Processes running the lock helper, with the network namespace each is in. */
async function helpers(): Promise<{ readonly pid: number; readonly net: string }[]> {
  const out: { pid: number; net: string }[] = [];
  for (const p of (await readdir('/proc')).filter((x) => /^\d+$/.test(x))) {
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (!cmd.split('\0').includes(HELPER)) continue;
    out.push({ pid: Number(p), net: await readlink(`/proc/${p}/ns/net`).catch(() => '?') });
  }
  return out;
}

/** Whether `pending` settles within `ms`. */
const settlesWithin = async (pending: Promise<unknown>, ms: number): Promise<boolean> => {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([pending.then(() => true, () => true), new Promise<boolean>((res) => (timer = setTimeout(() => res(false), ms)))]);
  clearTimeout(timer);
  return r;
};

t.test('locks held outside the host namespace exclude the CLI inside it', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    if (host.ns.kind !== 'path') throw new Error('isolated host without a netns path');
    const ns = host.ns;
    t.notOk(await inOwnNetns(ns), 'premise: this process is not in the host namespace');
    const cli = cliFor(host, { frontEnd: false });

    // Premise, the defect: this namespace's abstract-socket locks are not the CLI's.
    const plain = await openFsStore({ dir: host.stateDir });
    let cliDone: Promise<unknown> | undefined;
    await plain.withLock('cnm/networks', async () => {
      cliDone = cli('network', 'create', '--subnet', '10.41.0.0/24', 'while-held-plain');
      t.ok(await settlesWithin(cliDone, 30_000), 'premise: without the helper, the CLI runs through a lock held here');
    });
    t.equal((await cliDone as { code: number }).code, 0);

    // Through the helper, in the host namespace: the CLI waits until it is released.
    let proxy: ProxiedLock | undefined;
    const store = await openFsStore({ dir: host.stateDir, crossProcess: (scope) => (proxy = proxiedLock(inNetns(ns, [process.execPath, HELPER]), scope)) });
    t.teardown(() => proxy?.close());
    let order: string[] = [];
    await store.withLock('cnm/networks', async () => {
      order.push('held');
      const running = cli('network', 'create', '--subnet', '10.41.1.0/24', 'while-held');
      cliDone = running.then((r) => void order.push(`cli exited ${r.code}`));
      t.notOk(await settlesWithin(cliDone, 2_000), 'the CLI waits for the lock held through the helper');
      order.push('released');
    });
    await cliDone;
    t.same(order, ['held', 'released', 'cli exited 0'], 'and goes on once it is released');

    // A try from here wins at once: the helper let go (no stale hold).
    t.equal(await store.withLock('cnm/networks', async () => 'again', { timeoutMs: 0 }), 'again');
    await okCli(cli)('network', 'rm', 'while-held', 'while-held-plain');
    const list = await okCli(cli)('network', 'ls');
    t.notMatch(list, /while-held/, 'both networks are gone');

    const h = await helpers();
    t.equal(h.length, 1, 'one helper for this store');
    t.equal(h[0]?.net, `net:[${(await stat(ns.path)).ino}]`, 'in the host namespace');
    await proxy?.close();
    t.same(await helpers(), [], 'close() ends it');
  });
});

t.test('the library outside the host namespace takes its locks there, and close() ends the helper', { skip: skipUnlessRoot }, async (t) => {
  const lib = (await import(LIB)) as typeof import('../../lib/index.js');
  await withIsolatedHost(async (host) => {
    if (host.ns.kind !== 'path') throw new Error('isolated host without a netns path');
    const c = await lib.createController({ stateDir: host.stateDir, runDir: host.runDir, hostNetns: host.ns.path, log: 'error' });
    await c.createNetwork({ name: 'locked', subnets: [{ subnet: '10.42.0.0/24' }] });
    const h = await helpers();
    t.equal(h.length, 1, `the controller holds its locks through one helper (${h.map((x) => x.pid).join(', ')})`);
    await c.deleteNetwork('locked');
    await c.close();
    for (let i = 0; i < 50 && (await helpers()).length > 0; i++) await sleep(50);
    t.same(await helpers(), [], 'close() ended it');
  });
});
