/**
 * tsnet-bridge beyond IPv4 + nftables: a dual-stack network (an IPv4 and an IPv6 range set: two
 * addresses, two gateways, both default routes, packets over both families, a published port
 * reached over IPv6), and the iptables firewall backend (masquerade, published port, removal).
 * Driven as libcni does, real kernel, real packets.
 */
import t from 'tap';
import type { Attachment } from '../helpers/cni.js';
import { bridgeList, neighbour, nftElements, nsPath, reservations, world } from '../helpers/cni.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';
import { request, startServer } from '../helpers/traffic.js';
import type { NetnsRef } from '../../core/net.js';

const addrOf = (r: Record<string, unknown>, re: RegExp): string => ((r['ips'] as { address: string }[]).find((i) => re.test(i.address))?.address ?? '').split('/')[0] ?? '';

/** The neighbour link gets IPv6 too: host fd77::1, neighbour fd77::2. */
async function neighbour6(host: IsolatedHost): Promise<NetnsRef> {
  const n = await neighbour(host);
  await host.exec(['ip', 'addr', 'add', 'fd77::1/64', 'dev', 'vn0', 'nodad']);
  await host.execIn(n, ['ip', 'addr', 'add', 'fd77::2/64', 'dev', 'eth0', 'nodad']);
  return n;
}

t.test('dual stack: two addresses, two default routes, packets over both, a published port over IPv6', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await world(host);
    const nbr = await neighbour6(host);
    const list = bridgeList('1.0.0', w.dataDir, { ipam: { type: 'tsnet-ipam', ranges: [[{ subnet: '10.78.0.0/24' }], [{ subnet: 'fd78::/64' }]], dataDir: w.dataDir } });
    const ns1 = await host.newNetns('c1');
    const ns2 = await host.newNetns('c2');
    const a1: Attachment = { containerId: 'v1', netns: nsPath(ns1), ifName: 'eth0', capabilityArgs: { portMappings: [{ hostPort: 8086, containerPort: 80, protocol: 'tcp' }] } };
    const a2: Attachment = { containerId: 'v2', netns: nsPath(ns2), ifName: 'eth0' };
    const r1 = await w.cni.addList(list, a1);
    const r2 = await w.cni.addList(list, a2);
    const ips = r1['ips'] as { address: string; gateway?: string }[];
    t.equal(ips.length, 2, 'two addresses');
    t.match(ips[0]?.address, /^10\.78\.0\.\d+\/24$/, 'IPv4 from the first range set');
    t.match(ips[1]?.address, /^fd78::[0-9a-f]+\/64$/, 'IPv6 from the second');
    t.same(ips.map((i) => i.gateway), ['10.78.0.1', 'fd78::1'], 'a gateway per family');
    const routes = (r1['routes'] as { dst: string }[]).map((r) => r.dst).sort();
    t.same(routes, ['0.0.0.0/0', '::/0'], 'a default route per family in the result');
    const inside = (await host.execIn(ns1, ['ip', '-6', 'route', 'show', 'default'])).stdout;
    t.match(inside, /default via fd78::1 dev eth0/, 'the IPv6 default route is in the container');
    const bridgeAddrs = (await host.exec(['ip', '-br', 'addr', 'show', 'tcni0'])).stdout;
    t.match(bridgeAddrs, /10\.78\.0\.1\/24/, 'IPv4 gateway on the bridge');
    t.match(bridgeAddrs, /fd78::1\/64/, 'IPv6 gateway on the bridge');

    await startServer(host, ns1, 'tcp', '::', 80); // IPv6 only (net-tools), hence a second one for IPv4
    await startServer(host, ns1, 'tcp', '0.0.0.0', 80);
    const v6a = addrOf(r1, /:/);
    t.match(await request(ns2, 'tcp', v6a, 80), new RegExp(`from ${v6a} to ${addrOf(r2, /:/)}`), 'c2 reaches c1 over IPv6');
    t.match(await request(ns2, 'tcp', addrOf(r1, /\./), 80), /hello/, 'and over IPv4');
    t.match(await request(nbr, 'tcp', '192.168.77.1', 8086), /hello/, 'the published port over IPv4');
    t.match(await request(nbr, 'tcp', 'fd77::1', 8086), new RegExp(`from ${v6a} `), 'the published port over IPv6 reaches the container\'s IPv6 address');

    await w.cni.delList(list, a1);
    await w.cni.delList(list, a2);
    t.same(await reservations(w.dataDir), [], 'both families released');
    t.equal(await nftElements(host), 0, 'port elements removed');
  });
});

t.test('iptables backend: masquerade, isolation chains, a published port, nothing left after DEL', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await world(host);
    const nbr = await neighbour(host);
    const list = bridgeList('1.0.0', w.dataDir, { firewallBackend: 'iptables' });
    const ns1 = await host.newNetns('c1');
    const ns2 = await host.newNetns('c2');
    const a1: Attachment = { containerId: 'i1', netns: nsPath(ns1), ifName: 'eth0', capabilityArgs: { portMappings: [{ hostPort: 8087, containerPort: 80, protocol: 'tcp' }] } };
    const a2: Attachment = { containerId: 'i2', netns: nsPath(ns2), ifName: 'eth0' };
    const r1 = await w.cni.addList(list, a1);
    await w.cni.addList(list, a2);
    const save = (await host.exec(['iptables-save'])).stdout;
    t.match(save, /MASQUERADE/, 'masquerade rule in iptables');
    t.match(save, /--dport 8087/, 'the published port in iptables');
    t.equal(await nftElements(host), 0, 'nothing in tsnet\'s nft table');
    await startServer(host, ns1, 'tcp', '0.0.0.0', 80);
    t.match(await request(ns2, 'tcp', addrOf(r1, /\./), 80), /hello/, 'c2 reaches c1');
    t.match(await request(nbr, 'tcp', '192.168.77.1', 8087), /hello/, 'a neighbour reaches c1 through the published port');
    await w.cni.checkList(list, a1);
    t.pass('CHECK passes with the iptables backend');
    await w.cni.delList(list, a1);
    await w.cni.delList(list, a2);
    t.notMatch((await host.exec(['iptables-save'])).stdout, /--dport 8087/, 'the published port is gone from iptables');
    t.same(await reservations(w.dataDir), [], 'addresses released');
  });
});
