import t from 'tap';
import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import { parseIfName, parseIpAddr, parsePrefix, type IfName, type NetnsRef } from '../../core/net.js';
import { createIproute2Netlink, createIproute2NetlinkFor } from '../../sys/netlink/iproute2.js';
import { createSysctl, createSysctlFor } from '../../sys/sysctl.js';
import { netlinkContract, type WithNetlinkEnv } from '../contracts/netlink.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';
import { reachable, request, startServer } from '../helpers/traffic.js';

const n = parseIfName;
const p = parsePrefix;
const a = parseIpAddr;

async function removeNetns(host: IsolatedHost, ns: NetnsRef): Promise<void> {
  if (ns.kind === 'path') await host.netns.remove(basename(ns.path));
}

const withReal: WithNetlinkEnv = (fn) =>
  withIsolatedHost(async (host) => {
    const cache = createIproute2NetlinkFor();
    try {
      await fn({
        netlinkFor: cache,
        sysctlFor: createSysctlFor(),
        hostNs: host.ns,
        newNetns: () => host.newNetns(),
        removeNetns: async (ns) => {
          await cache.release(ns); // a live ip process inside would keep the namespace alive
          await removeNetns(host, ns);
        },
      });
    } finally {
      await cache.closeAll();
    }
  });

t.test('contract: iproute2 netlink on the real kernel', { skip: skipUnlessRoot }, async (t) => {
  netlinkContract(t, withReal);
});

t.test('veth into a namespace, address and default route inside, TCP across', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const nl = createIproute2NetlinkFor();
    try {
      const ctrNs = await host.newNetns('ctr');
      const h = nl(host.ns);
      const c = nl(ctrNs);
      const hostRes = await h.batch([
        { op: 'addVeth', name: n('vh0'), peer: n('eth0'), peerNetns: ctrNs },
        { op: 'addAddr', dev: n('vh0'), prefix: p('10.90.0.1/24') },
        { op: 'setLink', name: n('vh0'), changes: { up: true } },
        { op: 'addAddr', dev: n('lo'), prefix: p('10.91.0.1/32') }, // reachable only through the default route
      ]);
      t.same(hostRes.map((r) => r.ok), [true, true, true, true]);
      await Promise.all([c.addAddr(n('eth0'), p('10.90.0.2/24')), c.setLink(n('eth0'), { up: true })]);
      await startServer(host, host.ns, 'tcp', '10.91.0.1', 8080);
      t.notOk(await reachable(ctrNs, 'tcp', '10.91.0.1', 8080), 'no route yet');
      await c.addRoute({ dst: p('0.0.0.0/0'), via: a('10.90.0.1') });
      t.equal(await request(ctrNs, 'tcp', '10.91.0.1', 8080, 'x'), 'hello x from 10.91.0.1 to 10.90.0.2', 'through the default route');
      await startServer(host, ctrNs, 'tcp', '10.90.0.2', 8081);
      t.equal(await request(host.ns, 'tcp', '10.90.0.2', 8081, 'y'), 'hello y from 10.90.0.2 to 10.90.0.1', 'host to container');
      await c.removeRoute({ dst: p('0.0.0.0/0') });
      t.notOk(await reachable(ctrNs, 'tcp', '10.91.0.1', 8080), 'route removed');
    } finally {
      await nl.closeAll();
    }
  });
});

t.test('bridge with two namespaces attached: TCP over IPv4 and IPv6 (nodad)', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const nl = createIproute2NetlinkFor();
    try {
      const h = nl(host.ns);
      await h.ensureBridge(n('tbr0'));
      await h.batch([
        { op: 'addAddr', dev: n('tbr0'), prefix: p('10.92.0.1/24') },
        { op: 'addAddr', dev: n('tbr0'), prefix: p('fd00:92::1/64'), nodad: true },
        { op: 'addAddr', dev: n('lo'), prefix: p('fd00:93::1/128'), nodad: true },
        { op: 'setLink', name: n('tbr0'), changes: { up: true } },
      ]);
      const nss: NetnsRef[] = [];
      for (const i of [2, 3]) {
        const ns = await host.newNetns(`c${i}`);
        nss.push(ns);
        const vh = n(`vb${i}`);
        const res = await h.batch([
          { op: 'addVeth', name: vh, peer: n('eth0'), peerNetns: ns },
          { op: 'setLink', name: vh, changes: { master: n('tbr0'), up: true } },
        ]);
        t.same(res.map((r) => r.ok), [true, true]);
        const c = nl(ns);
        const cr = await c.batch([
          { op: 'addAddr', dev: n('eth0'), prefix: p(`10.92.0.${i}/24`) },
          { op: 'addAddr', dev: n('eth0'), prefix: p(`fd00:92::${i}/64`), nodad: true },
          { op: 'setLink', name: n('eth0'), changes: { up: true } },
          { op: 'addRoute', route: { dst: p('::/0'), via: a('fd00:92::1') } },
        ]);
        t.same(cr.map((r) => (r.ok ? 'ok' : r.error.message)), ['ok', 'ok', 'ok', 'ok']);
      }
      const [ns2, ns3] = nss as [NetnsRef, NetnsRef];
      t.match(await h.getLink(n('vb2')), { master: 'tbr0', up: true });
      await startServer(host, ns3, 'tcp', '10.92.0.3', 9000);
      t.equal(await request(ns2, 'tcp', '10.92.0.3', 9000, 'v4'), 'hello v4 from 10.92.0.3 to 10.92.0.2', 'IPv4 across the bridge');
      await startServer(host, ns3, 'tcp', 'fd00:92::3', 9001);
      t.equal(await request(ns2, 'tcp', 'fd00:92::3', 9001, 'v6'), 'hello v6 from fd00:92::3 to fd00:92::2', 'IPv6 across the bridge');
      await startServer(host, host.ns, 'tcp', 'fd00:93::1', 9002);
      t.equal(await request(ns3, 'tcp', 'fd00:93::1', 9002, 'gw'), 'hello gw from fd00:93::1 to fd00:92::3', 'IPv6 default route');
      // detaching a port cuts it off
      await h.setLink(n('vb2'), { master: null });
      t.notOk(await reachable(ns2, 'tcp', '10.92.0.3', 9000), 'nomaster: no longer bridged');
    } finally {
      await nl.closeAll();
    }
  });
});

t.test('bad input touches no process and creates nothing', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const h = createIproute2Netlink(host.ns, { eager: false });
    try {
      await t.rejects(h.addVeth({ name: 'x'.repeat(16) as IfName, peer: n('p0') }), { code: 'INVALID_CONFIG', details: { field: 'name' } });
      await t.rejects(h.addAddr(n('lo'), '10.0.0.1/40' as never), { code: 'INVALID_CONFIG', details: { field: 'prefix' } });
      await t.rejects(h.batch([{ op: 'addBridge', name: n('ok0') }, { op: 'addBridge', name: 'a/b' as IfName }]), { code: 'INVALID_CONFIG' });
      t.equal(h.pid, undefined, 'no ip process was started');
      const links = JSON.parse((await host.exec(['ip', '-json', 'link', 'show'])).stdout) as { ifname: string }[];
      t.same(links.map((l) => l.ifname), ['lo'], 'nothing half-created');
    } finally {
      await h.close();
    }
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

t.test('killing the ip process: in-flight ops reject UNAVAILABLE, the next op restarts it', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const h = createIproute2Netlink(host.ns);
    try {
      await h.ensureBridge(n('kbr0'));
      const pid1 = h.pid;
      t.ok(pid1 !== undefined && pid1 > 0, 'has a process');
      process.kill(pid1 as number, 'SIGKILL'); // we started it
      await t.rejects(h.addBridge(n('kbr1')), { code: 'UNAVAILABLE' }, 'the op written to the dead process');
      await h.addBridge(n('kbr1'));
      t.not(h.pid, pid1, 'a new process');
      t.match(await h.getLink(n('kbr1')), { kind: 'bridge' });

      // many ops in flight when it dies: each either completes or rejects UNAVAILABLE; none hangs
      const pid2 = h.pid as number;
      const ops = Array.from({ length: 60 }, (_, i) => h.ensureAddr(n('kbr1'), p(`10.93.${i}.1/32`)).then(() => 'ok', (e: { code: string }) => e.code));
      setImmediate(() => process.kill(pid2, 'SIGKILL'));
      const results = await Promise.all(ops);
      t.ok(results.every((r) => r === 'ok' || r === 'UNAVAILABLE'), `outcomes: ${[...new Set(results)].join(',')}`);
      // All 60 may have completed before the signal landed: wait (bounded) until that process is
      // gone, so the checks below do not race with its death.
      for (let i = 0; i < 100 && isAlive(pid2); i++) await new Promise((r) => setTimeout(r, 20));
      t.notOk(isAlive(pid2), 'the killed process is gone');
      await new Promise((r) => setImmediate(r));
      const have = new Set((await h.listAddrs(n('kbr1'))).map((x) => x.prefix));
      results.forEach((r, i) => {
        if (r === 'ok' && !have.has(p(`10.93.${i}.1/32`))) t.fail(`op ${i} reported ok but is not applied`);
      });
      await h.addAddr(n('kbr1'), p('10.94.0.1/32'));
      t.pass('the handle works after the second death');
    } finally {
      await h.close();
    }
  });
});

t.test('an idle namespace process is ended and restarted on demand', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const ns = await host.newNetns('idle');
    const h = createIproute2Netlink(ns, { idleMs: 100 });
    try {
      await h.getLink(n('lo'));
      const pid = h.pid;
      t.ok(pid);
      await new Promise((r) => setTimeout(r, 400));
      t.equal(h.pid, undefined, 'ended after idleMs');
      t.match(await h.getLink(n('lo')), { name: 'lo' });
      t.not(h.pid, pid);
    } finally {
      await h.close();
    }
  });
});

t.test('a veth peer placed in the process own namespace ({kind: host}) from a namespace handle', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    // The process's own namespace is the throwaway one made by scripts/isolate.mjs.
    const self = createIproute2Netlink({ kind: 'host' });
    const h = createIproute2Netlink(host.ns);
    const peer = n(`tsp${randomBytes(3).toString('hex')}`);
    try {
      await h.addVeth({ name: n('vs0'), peer, peerNetns: { kind: 'host' } });
      t.match(await self.getLink(peer), { kind: 'veth' });
      t.match(await h.getLink(n('vs0')), { kind: 'veth' });
      await self.removeLink(peer);
      t.equal(await self.getLink(peer), undefined, 'cleaned up');
      t.equal(await h.getLink(n('vs0')), undefined, 'both ends');
    } finally {
      await self.removeLink(peer).catch(() => undefined);
      await Promise.all([self.close(), h.close()]);
    }
  });
});

t.test('sysctl in the process own namespace (plain files)', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async () => {
    // (withIsolatedHost asserts that the process's own namespace is a throwaway one)
    const sc = createSysctl({ kind: 'host' });
    const v = await sc.get('net.ipv4.conf.lo.accept_local');
    await sc.set({ 'net.ipv4.conf.lo.accept_local': v }); // writes the same value: no change
    t.equal(await sc.get('net.ipv4.conf.lo.accept_local'), v);
    await t.rejects(sc.get('net.ipv4.conf.nope0.forwarding'), { code: 'NOT_FOUND' });
    await t.rejects(sc.set({ 'net.ipv4.conf.lo.accept_local': 'abc' }), { code: 'INVALID_CONFIG' });
  });
});
