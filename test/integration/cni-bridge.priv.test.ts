/**
 * CNI conformance of tsnet-bridge (+ built-in IPAM + portMappings), driven exactly as libcni does
 * (test/helpers/cni.ts): every verb and configuration version, chaining, result cache, DEL in
 * reverse order, double DEL, DEL without the netns, CHECK after the address was removed, GC with
 * cni.dev/valid-attachments. Real kernel, real packets.
 */
import t from 'tap';
import type { Attachment } from '../helpers/cni.js';
import { bridgeList, links, neighbour, nftElements, nsPath, reservations, world } from '../helpers/cni.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';
import { request, startServer } from '../helpers/traffic.js';
import { CniError, execPlugin, Libcni } from '../helpers/cni.js';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

const VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

t.test('ADD/CHECK/DEL per version: result format, real packets, published port, nothing left', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await world(host);
    const nbr = await neighbour(host);
    const before = await links(host);
    for (const v of VERSIONS) {
      const list = bridgeList(v, w.dataDir);
      const ns1 = await host.newNetns('c1');
      const ns2 = await host.newNetns('c2');
      const a1: Attachment = { containerId: `c1-${v}`, netns: nsPath(ns1), ifName: 'eth0', capabilityArgs: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] } };
      const a2: Attachment = { containerId: `c2-${v}`, netns: nsPath(ns2), ifName: 'eth0' };
      const r1 = await w.cni.addList(list, a1);
      const r2 = await w.cni.addList(list, a2);
      t.equal(r1['cniVersion'], v, `${v}: result in the config's version`);
      const ips = r1['ips'] as { address: string; gateway: string; interface: number; version?: string }[];
      t.equal(ips.length, 1, `${v}: one address`);
      const ip1 = ips[0]?.address.split('/')[0] ?? '';
      const ip2 = (r2['ips'] as { address: string }[])[0]?.address.split('/')[0] ?? '';
      t.match(ips[0]?.address, /^10\.77\.0\.\d+\/24$/, `${v}: address from the range`);
      t.equal(ips[0]?.gateway, '10.77.0.1', `${v}: gateway`);
      t.equal(ips[0]?.version, v.startsWith('0.') ? '4' : undefined, `${v}: ips[].version only before 1.0.0`);
      const ifs = r1['interfaces'] as { name: string; sandbox?: string; mac?: string }[];
      t.same(ifs.map((i) => i.name).slice(0, 1), ['tcni0'], `${v}: bridge first`);
      t.equal(ifs[ips[0]?.interface ?? -1]?.sandbox, a1.netns, `${v}: ips[].interface points at the container interface`);
      t.not(ip1, ip2, `${v}: distinct addresses`);
      const port = JSON.parse((await host.exec(['ip', '-d', '-j', 'link', 'show', ifs[1]?.name ?? ''])).stdout) as { linkinfo?: { info_slave_data?: { hairpin?: boolean } } }[];
      t.equal(port[0]?.linkinfo?.info_slave_data?.hairpin, true, `${v}: hairpinMode sets the bridge port's hairpin flag`);
      // real packets: container to container, and through the published port from a neighbour
      await startServer(host, ns1, 'tcp', '0.0.0.0', 80);
      t.match(await request(ns2, 'tcp', ip1, 80), /.+/, `${v}: c2 reaches c1`);
      t.match(await request(nbr, 'tcp', '192.168.77.1', 8080), /.+/, `${v}: a neighbour reaches c1 through the published port`);
      if (v !== '0.3.0' && v !== '0.3.1') {
        await w.cni.checkList(list, a1);
        t.pass(`${v}: CHECK passes`);
      }
      await w.cni.delList(list, a1);
      await w.cni.delList(list, a2);
      t.same(await reservations(w.dataDir), [], `${v}: addresses released`);
      t.equal(await nftElements(host), 0, `${v}: port elements removed`);
      await host.netns.remove(ns1.kind === 'path' ? ns1.path.split('/').pop() ?? '' : '');
      await host.netns.remove(ns2.kind === 'path' ? ns2.path.split('/').pop() ?? '' : '');
    }
    const after = (await links(host)).filter((l) => l !== 'tcni0');
    t.same(after, before, 'no interface left but the bridge');
  });
});

const ctr = (id: string, netns: string, caps?: Record<string, unknown>): Attachment => ({ containerId: id, netns, ifName: 'eth0', ...(caps ? { capabilityArgs: caps } : {}) });
const PORT = { portMappings: [{ hostPort: 9090, containerPort: 90, protocol: 'tcp' }] };

t.test('DEL is idempotent: twice, after the netns is gone, without prevResult', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await world(host);
    const list = bridgeList('1.1.0', w.dataDir);
    const ns = await host.newNetns('c');
    const a = ctr('dbl', nsPath(ns), PORT);
    await w.cni.addList(list, a);
    const base = await links(host);
    t.equal(await nftElements(host), 1, 'a port element');
    // the netns disappears before DEL (container died, runtime cleaned up)
    await host.netns.remove(nsPath(ns).split('/').pop() ?? '');
    await w.cni.delList(list, a);
    t.equal(await nftElements(host), 0, 'DEL without the netns removed the port');
    t.same(await reservations(w.dataDir), [], 'and the address');
    t.equal((await links(host)).length, base.length - 1, 'and the host veth');
    await w.cni.delList(list, a);
    t.pass('second DEL succeeds');
    // DEL with neither netns nor prevResult, straight at the plugin
    const req = Libcni.request(list, list.plugins[0] ?? {}, { ...a, netns: '' }, undefined);
    const r = await w.cni.exec('tsnet-bridge', 'DEL', { ...a, netns: '' }, req);
    t.equal(r.exit, 0, 'DEL without CNI_NETNS and prevResult succeeds');
    // an attachment ADDed, then DELed without prevResult: still released (directory walk)
    const ns2 = await host.newNetns('c');
    const b = ctr('noprev', nsPath(ns2));
    await w.cni.addList(list, b);
    const r2 = await w.cni.exec('tsnet-bridge', 'DEL', b, Libcni.request(list, list.plugins[0] ?? {}, b, undefined));
    t.equal(r2.exit, 0, 'DEL without prevResult');
    t.same(await reservations(w.dataDir), [], 'released without prevResult');
  });
});

t.test('CHECK: passes after ADD, fails with the field named once the address is removed', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await world(host);
    const list = bridgeList('1.0.0', w.dataDir);
    const ns = await host.newNetns('c');
    const a = ctr('chk', nsPath(ns), PORT);
    const r = await w.cni.addList(list, a);
    await w.cni.checkList(list, a);
    t.pass('CHECK passes');
    const addr = (r['ips'] as { address: string }[])[0]?.address ?? '';
    await host.execIn(ns, ['ip', 'addr', 'del', addr, 'dev', 'eth0']);
    const err = await w.cni.checkList(list, a).then(() => undefined, (e: unknown) => e);
    t.ok(err instanceof CniError, 'CHECK fails');
    t.match((err as CniError).result.json?.['details'], new RegExp(`address ${addr.replace(/\./g, '\\.')} is missing`), 'names the address');
    t.equal((err as CniError).code, 3, 'code 3');
    // the port mapping flushed behind our back is noticed too
    await host.execIn(ns, ['ip', 'addr', 'add', addr, 'dev', 'eth0']);
    await host.exec(['nft', 'flush', 'map', 'inet', 'tsnet', 'ports4_any']);
    const err2 = await w.cni.checkList(list, a).then(() => undefined, (e: unknown) => e);
    t.match((err2 as CniError | undefined)?.result.json?.['details'], /published ports .* missing/, 'missing port mapping noticed');
    await w.cni.delList(list, a);
  });
});

t.test('GC releases addresses, veths and ports of everything not in cni.dev/valid-attachments', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await world(host);
    const list = bridgeList('1.1.0', w.dataDir);
    const atts: Attachment[] = [];
    for (let i = 0; i < 3; i++) {
      const ns = await host.newNetns('c');
      const a = ctr(`gc${i}`, nsPath(ns), { portMappings: [{ hostPort: 7000 + i, containerPort: 80, protocol: 'tcp' }] });
      await w.cni.addList(list, a);
      atts.push(a);
    }
    const keep = atts[1] as Attachment;
    const linksBefore = await links(host);
    t.equal((await reservations(w.dataDir)).length, 3, 'three reservations');
    t.equal(await nftElements(host), 3, 'three port elements');
    await w.cni.gcList(list, [{ containerId: keep.containerId, ifName: 'eth0' }]);
    t.equal((await reservations(w.dataDir)).length, 1, 'one reservation left');
    t.equal(await nftElements(host), 1, 'one port element left');
    t.equal((await links(host)).length, linksBefore.length - 2, 'two veths removed');
    const files = await readdir(join(w.dataDir, 'tnet'));
    t.ok(files.includes('lock') && files.some((f) => f.startsWith('last_reserved_ip.')), 'lock and last_reserved_ip kept');
    await w.cni.checkList(list, keep);
    t.pass('the listed attachment still passes CHECK');
    await w.cni.gcList(list, []);
    t.same(await reservations(w.dataDir), [], 'GC with an empty list releases the rest');
    t.equal(await nftElements(host), 0, 'and its ports');
  });
});

t.test('STATUS, VERSION, ips and mac capabilities, CNI_ARGS IP, prevResult amended, concurrent ADDs', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await world(host);
    const list = bridgeList('1.1.0', w.dataDir);
    await w.cni.statusList(list);
    t.pass('STATUS succeeds');
    // cniVersions: the runtime picks the highest version both sides know
    const nsv = await host.newNetns('v');
    const multi = { ...list, cniVersion: '0.4.0', cniVersions: ['0.4.0', '1.1.0', '9.0.0'] };
    const rv = await w.cni.addList(multi, ctr('multi', nsPath(nsv)));
    t.equal(rv['cniVersion'], '1.1.0', 'cniVersions honoured: the list runs at 1.1.0');
    await w.cni.delList(multi, ctr('multi', nsPath(nsv)));
    const v = await execPlugin(host.ns, join(w.cni.cniPath, 'tsnet-bridge'), { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0"}');
    t.same(v.json, { cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] }, 'VERSION');
    const ns = await host.newNetns('c');
    const a = ctr('caps', nsPath(ns), { ips: ['10.77.0.50/24'], mac: '02:11:22:33:44:55' });
    const r = await w.cni.addList(list, a);
    t.equal((r['ips'] as { address: string }[])[0]?.address, '10.77.0.50/24', 'ips capability honoured');
    const link = JSON.parse((await host.execIn(ns, ['ip', '-json', 'link', 'show', 'eth0'])).stdout) as { address: string }[];
    t.equal(link[0]?.address, '02:11:22:33:44:55', 'mac capability honoured');
    const ns2 = await host.newNetns('c');
    const b: Attachment = { containerId: 'args', netns: nsPath(ns2), ifName: 'net1', args: 'IgnoreUnknown=true;IP=10.77.0.60' };
    const prev = { cniVersion: '1.1.0', interfaces: [{ name: 'lo0', sandbox: nsPath(ns2) }], ips: [] };
    const rb = await w.cni.exec('tsnet-bridge', 'ADD', b, { ...Libcni.request(list, list.plugins[0] ?? {}, b, undefined), prevResult: prev });
    t.equal(rb.exit, 0, 'ADD with a prevResult');
    t.equal(((rb.json?.['interfaces'] as { name: string }[])[0])?.name, 'lo0', 'prevResult interfaces kept first');
    t.same((rb.json?.['ips'] as { address: string; interface: number }[])[0], { address: '10.77.0.60/24', gateway: '10.77.0.1', interface: 3 }, 'CNI_ARGS IP honoured, interface index shifted');
    // a requested address already taken: error, nothing created
    const ns3 = await host.newNetns('c');
    const err = await w.cni.addList(list, ctr('dup', nsPath(ns3), { ips: ['10.77.0.50'] })).then(() => undefined, (e: unknown) => e as CniError);
    t.match(err?.result.json?.['details'], /10\.77\.0\.50 is already reserved/, 'taken address refused');
    // concurrent ADDs
    const many = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
      const n = await host.newNetns('p');
      const at = ctr(`par${i}`, nsPath(n));
      return { at, r: await w.cni.addList(list, at) };
    }));
    const addrs = many.map((m) => (m.r['ips'] as { address: string }[])[0]?.address);
    t.equal(new Set(addrs).size, 8, '8 concurrent ADDs, 8 distinct addresses');
    await Promise.all(many.map((m) => w.cni.delList(list, m.at)));
    await w.cni.delList(list, a);
    await w.cni.exec('tsnet-bridge', 'DEL', b, Libcni.request(list, list.plugins[0] ?? {}, b, undefined));
    t.same(await reservations(w.dataDir), [], 'all released');
  });
});

t.test('bandwidth capability: traffic shaped both ways (tbf on both ends of the veth)', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await world(host);
    const base = bridgeList('1.1.0', w.dataDir);
    const list = { ...base, plugins: [{ ...base.plugins[0], capabilities: { bandwidth: true } }] };
    const ns = await host.newNetns('bw');
    const rate = 8_000_000;
    const a = ctr('bw', nsPath(ns), { bandwidth: { ingressRate: rate, ingressBurst: 400_000, egressRate: rate, egressBurst: 400_000 } });
    const r = await w.cni.addList(list, a);
    const ip = (r['ips'] as { address: string }[])[0]?.address.split('/')[0] ?? '';
    const hostIf = (r['interfaces'] as { name: string }[])[1]?.name ?? '';
    const qd = (await host.exec(['tc', 'qdisc', 'show', 'dev', hostIf])).stdout;
    t.match(qd, /tbf .*rate 8Mbit/, 'token bucket on the host end');
    t.match((await host.execIn(ns, ['tc', 'qdisc', 'show', 'dev', 'eth0'])).stdout, /tbf .*rate 8Mbit/, 'token bucket on the container end');
    host.spawnIn(ns, ['iperf3', '-s', '-p', '5201']);
    const measure = async (reverse: boolean): Promise<number> => {
      for (let i = 0; ; i++) {
        try {
          const out = (await host.exec(['iperf3', '-c', ip, '-p', '5201', '-t', '1', '-J', ...(reverse ? ['-R'] : [])], { timeoutMs: 20_000 })).stdout;
          return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
        } catch (err) {
          if (i >= 20) throw err;
          await new Promise((res) => setTimeout(res, 200));
        }
      }
    };
    const into = await measure(false);
    t.ok(into > rate * 0.3 && into < rate * 1.5, `into the container: ${(into / 1e6).toFixed(1)} Mbit/s at an 8 Mbit/s ingressRate`);
    const out = await measure(true);
    t.ok(out > rate * 0.3 && out < rate * 1.5, `out of the container: ${(out / 1e6).toFixed(1)} Mbit/s at an 8 Mbit/s egressRate`);
    await w.cni.delList(list, a);
    const bad = await w.cni.addList(list, ctr('bw2', nsPath(await host.newNetns('bw')), { bandwidth: { ingressRate: rate } })).then(() => undefined, (e: CniError) => e);
    t.match(bad?.result.json?.['details'], /runtimeConfig\.bandwidth\.ingressBurst/, 'a rate without its burst is refused, naming the field');
    t.same(await reservations(w.dataDir), [], 'nothing left');
  });
});
