/**
 * macvlan through every door, the same driver behind each (drivers/macvlan): the CLI (`network
 * create -d macvlan -o parent=`), the library, the CNI plugin tsnet-macvlan (driven as libcni does)
 * and a real dockerd with `-d tsnet-macvlan`. In each, containers on a macvlan network of the
 * parent `lan0` reach a neighbour on the parent's link (the LAN's "router") and each other, with
 * their own MACs on the LAN; removing everything leaves the parent as it was.
 */
import t from 'tap';
import { join } from 'node:path';
import { nullLogger } from '../../core/log.js';
import { createController } from '../../lib/index.js';
import { cliFor, okCli } from '../helpers/cli.js';
import { Libcni, makeCniPath, nsPath, type Conflist } from '../helpers/cni.js';
import { IMAGE, importBusybox, startDockerd } from '../helpers/dockerd.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';
import { request, startServer } from '../helpers/traffic.js';
import type { NetnsRef } from '../../core/net.js';

/** A LAN on `lan0`: its other end in the neighbour namespace, the router 192.168.88.1 answering on 80. */
async function lan(host: IsolatedHost): Promise<NetnsRef> {
  const nbr = await host.newNetns('lan');
  await host.exec(['ip', 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nsPath(nbr)]);
  await host.exec(['ip', 'link', 'set', 'lan0', 'up']);
  await host.execIn(nbr, ['ip', 'addr', 'add', '192.168.88.1/24', 'dev', 'eth0']);
  await host.execIn(nbr, ['ip', 'link', 'set', 'eth0', 'up']);
  await startServer(host, nbr, 'tcp', '0.0.0.0', 80);
  return nbr;
}

const parentState = async (host: IsolatedHost): Promise<string> => {
  const [l] = JSON.parse((await host.exec(['ip', '-json', 'addr', 'show', 'dev', 'lan0'])).stdout) as { flags: string[]; address: string; addr_info: unknown[] }[];
  return JSON.stringify({ flags: l?.flags, mac: l?.address, addrs: l?.addr_info.length });
};
const macvlansOf = async (host: IsolatedHost): Promise<number> =>
  (JSON.parse((await host.exec(['ip', '-json', '-details', 'link', 'show'])).stdout) as { linkinfo?: { info_kind?: string } }[]).filter((l) => l.linkinfo?.info_kind === 'macvlan').length;

t.test('macvlan from the CLI and the library', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const nbr = await lan(host);
    const before = await parentState(host);
    const ok = okCli(cliFor(host));
    await t.rejects(ok('network', 'create', '-d', 'macvlan', '--subnet', '192.168.88.0/24', 'nopar'), /option parent: required/, 'parent is required');
    await t.rejects(ok('network', 'create', '-d', 'macvlan', '-o', 'parent=nope0', '--subnet', '192.168.88.0/24', 'nopar'), /parent: nope0: no such interface/);
    await t.rejects(ok('network', 'create', '-d', 'macvlan', '-o', 'parent=lan0', '-o', 'macvlan_mode=sideways', '--subnet', '192.168.88.0/24', 'badmode'), /macvlan_mode/);
    await ok('network', 'create', '-d', 'macvlan', '-o', 'parent=lan0', '--subnet', '192.168.88.0/24', '--gateway', '192.168.88.1', '--ip-range', '192.168.88.64/28', 'mv');
    await ok('run', '-d', '--name', 'a', '--network', 'mv', '--', 'sleep', '600');
    await ok('run', '-d', '--name', 'b', '--network', 'mv', '--ip', '192.168.88.200', '--', 'sleep', '600');
    const inspect = JSON.parse(await ok('inspect', 'a')) as { NetworkSettings: { Networks: Record<string, { IPAddress: string; MacAddress: string }> }; Tsnet?: { netns?: string } }[];
    const ipA = inspect[0]?.NetworkSettings.Networks['mv']?.IPAddress ?? '';
    t.match(ipA, /^192\.168\.88\.(6[4-9]|7\d)$/, `an address of the ip-range: ${ipA}`);
    const nsOf = async (name: string): Promise<NetnsRef> => ({ kind: 'path', path: (await ok('inspect', '--format', '{{.NetworkSettings.SandboxKey}}', name)).trim() });
    const [nsA, nsB] = [await nsOf('a'), await nsOf('b')];
    t.match(await request(nsA, 'tcp', '192.168.88.1', 80), /.+/, 'a reaches the LAN router through the parent');
    await startServer(host, nsB, 'tcp', '0.0.0.0', 81);
    t.match(await request(nsA, 'tcp', '192.168.88.200', 81), /.+/, 'a reaches b (bridge mode)');
    t.match(await request(nbr, 'tcp', '192.168.88.200', 81), /.+/, 'the LAN reaches b at its own address');
    const route = (await host.execIn(nsA, ['ip', 'route', 'show', 'default'])).stdout;
    t.match(route, /default via 192\.168\.88\.1 dev eth0/, 'default route through the LAN\'s gateway');
    await t.rejects(ok('run', '-d', '--name', 'c', '--network', 'mv', '-p', '8080:80', '--', 'sleep', '600'), /macvlan network: its containers are reached on their own addresses/, 'no published ports on macvlan');
    t.equal(await macvlansOf(host), 0, 'no macvlan in the host namespace (they live in the sandboxes)');

    // The library: the same driver, another store.
    if (host.ns.kind !== 'path') throw new Error('isolated host without a netns path');
    const lib = await createController({ stateDir: join(host.stateDir, 'lib'), runDir: join(host.runDir, 'lib'), hostNetns: host.ns.path, log: nullLogger });
    host.defer(() => host.exec(['umount', '-l', join(host.runDir, 'lib', 'netns')]).catch(() => undefined));
    try {
      await lib.createNetwork({ name: 'lmv', driver: 'macvlan', options: { parent: 'lan0', macvlan_mode: 'bridge' }, subnets: [{ subnet: '192.168.88.0/24', gateway: '192.168.88.1', ipRange: '192.168.88.128/28' }] });
      const sb = await lib.createSandbox({ name: 'ls1', mode: { kind: 'network', network: 'lmv' } });
      const [ep] = await lib.endpointsOf(sb.record.id);
      t.match(ep?.addresses[0] ?? '', /^192\.168\.88\.1[2-4]\d\/24$/, 'an address of the library network\'s range');
      t.match(await request(sb.netns, 'tcp', '192.168.88.1', 80), /.+/, 'the library\'s sandbox reaches the LAN');
      t.match(await request(sb.netns, 'tcp', '192.168.88.200', 81), /.+/, 'and the CLI\'s container on the same parent');
      await lib.deleteSandbox('ls1');
      await lib.deleteNetwork('lmv');
    } finally {
      await lib.close();
    }
    await ok('rm', '-f', 'a', 'b');
    await ok('network', 'rm', 'mv');
    t.equal(await parentState(host), before, 'the parent is as it was');
  });
});

t.test('macvlan through CNI (tsnet-macvlan) and Docker (-d tsnet-macvlan)', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    await lan(host);
    const before = await parentState(host);
    const cniPath = await makeCniPath(join(host.runDir, 'cni-bin'));
    const cni = new Libcni({ ns: host.ns, cniPath, cacheDir: join(host.stateDir, 'cni-cache') });
    const list: Conflist = {
      cniVersion: '1.0.0', name: 'cmv',
      plugins: [{ type: 'tsnet-macvlan', master: 'lan0', mode: 'bridge', ipam: { type: 'tsnet-ipam', ranges: [[{ subnet: '192.168.88.0/24', rangeStart: '192.168.88.100', rangeEnd: '192.168.88.110', gateway: '192.168.88.1' }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: join(host.stateDir, 'ipam') } }],
    };
    const p1 = await host.newNetns('p1');
    const p2 = await host.newNetns('p2');
    const r1 = await cni.addList(list, { containerId: 'p1', netns: nsPath(p1), ifName: 'eth0' });
    const r2 = await cni.addList(list, { containerId: 'p2', netns: nsPath(p2), ifName: 'eth0' });
    const ip = (r: Record<string, unknown>): string => (r['ips'] as { address: string }[])[0]?.address.split('/')[0] ?? '';
    t.match(ip(r1), /^192\.168\.88\.10\d$/, `CNI pod address ${ip(r1)}`);
    t.match((r1['interfaces'] as { name: string; mac?: string; sandbox?: string }[])[0], { name: 'eth0', mac: /^[0-9a-f:]{17}$/, sandbox: nsPath(p1) }, 'the result names the macvlan in the pod');
    t.match(await request(p1, 'tcp', '192.168.88.1', 80), /.+/, 'the pod reaches the LAN');
    await startServer(host, p2, 'tcp', '0.0.0.0', 82);
    t.match(await request(p1, 'tcp', ip(r2), 82), /.+/, 'and the other pod');
    await cni.checkList(list, { containerId: 'p1', netns: nsPath(p1), ifName: 'eth0' });
    await cni.delList(list, { containerId: 'p1', netns: nsPath(p1), ifName: 'eth0' });
    await cni.delList(list, { containerId: 'p1', netns: nsPath(p1), ifName: 'eth0' });
    t.equal((await host.execIn(p1, ['ip', '-o', 'link', 'show'])).stdout.includes('eth0'), false, 'DEL removed the macvlan (twice: idempotent)');
    await cni.delList(list, { containerId: 'p2', netns: nsPath(p2), ifName: 'eth0' });

    // A real dockerd at its defaults with the tsnet plugin's macvlan driver.
    const d = await startDockerd(host);
    await importBusybox(d, join(host.stateDir, 'image'));
    await d.ok('network', 'create', '-d', 'tsnet-macvlan', '--ipam-driver', 'tsnet', '--subnet', '192.168.88.0/24', '--gateway', '192.168.88.1', '--ip-range', '192.168.88.32/28', '-o', 'parent=lan0', 'dmv');
    await d.ok('run', '-d', '--name', 'dweb', '--network', 'dmv', '--ip', '192.168.88.40', IMAGE, 'nc', '-ll', '-p', '80', '-e', 'echo', 'hello');
    let answer = '';
    for (let i = 0; i < 20 && answer === ''; i++) {
      const r = await d.docker('run', '--rm', '--network', 'dmv', IMAGE, 'nc', '-w', '2', '192.168.88.40', '80');
      answer = r.stdout.trim();
      if (answer === '') await new Promise((res) => setTimeout(res, 150));
    }
    t.equal(answer, 'hello', 'a Docker container reaches another on the macvlan network');
    const viaLan = await d.docker('run', '--rm', '--network', 'dmv', IMAGE, 'sh', '-c', 'echo ping | nc -w 2 192.168.88.1 80');
    t.match(viaLan.stdout, /.+/, 'and the LAN router');
    await d.ok('rm', '-f', 'dweb');
    await d.ok('network', 'rm', 'dmv');
    t.equal(await macvlansOf(host), 0, 'no macvlan left in the host namespace');
    t.equal(await parentState(host), before, 'the parent is as it was');
  });
});
