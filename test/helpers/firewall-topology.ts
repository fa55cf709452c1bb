/**
 * The topology both firewall backends are tested on (test/integration/firewall-*.priv.test.ts),
 * built inside an isolated host; forwarding is enabled in the "host" namespace only:
 *
 *   neighbour N  eth0 192.168.77.2 fd77::2 ── vn0 192.168.77.1 fd77::1 ┐
 *                                                                      host
 *   container C  eth0 10.88.0.2 fd88::2 ── vc0 ── tsbr0 10.88.0.1 fd88::1 ┘
 *   container D  eth0 10.89.0.2          ── vd0 ── tsbr1 10.89.0.1     (another network)
 */
import type { EndpointId, IfName, NetnsRef, NetworkId, Prefix } from '../../core/net.js';
import type { EndpointPorts, NetworkPolicy } from '../../sys/firewall/api.js';
import { sampleMapping as m } from '../../sys/firewall/fake.js';
import type { IsolatedHost } from './isolated-host.js';

export const path = (ns: NetnsRef): string => (ns.kind === 'path' ? ns.path : '/proc/self/ns/net');

export interface World {
  readonly c: NetnsRef;
  readonly d: NetnsRef;
  readonly n: NetnsRef;
}

export async function buildWorld(host: IsolatedHost): Promise<World> {
  const [c, d, n] = [await host.newNetns('ctr'), await host.newNetns('ctr2'), await host.newNetns('nbr')];
  const h = (...argv: string[]): Promise<unknown> => host.exec(argv as [string, ...string[]]);
  const i = (ns: NetnsRef, ...argv: string[]): Promise<unknown> => host.execIn(ns, argv as [string, ...string[]]);
  await h('sysctl', '-qw', 'net.ipv4.ip_forward=1');
  await h('sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1');
  for (const [br, gw, gw6] of [['tsbr0', '10.88.0.1/24', 'fd88::1/64'], ['tsbr1', '10.89.0.1/24', undefined]] as const) {
    await h('ip', 'link', 'add', br, 'type', 'bridge');
    await h('ip', 'addr', 'add', gw, 'dev', br);
    if (gw6) await h('ip', '-6', 'addr', 'add', gw6, 'dev', br, 'nodad');
    await h('ip', 'link', 'set', br, 'up');
  }
  for (const [ns, veth, br, addr, gw, addr6, gw6] of [
    [c, 'vc0', 'tsbr0', '10.88.0.2/24', '10.88.0.1', 'fd88::2/64', 'fd88::1'],
    [d, 'vd0', 'tsbr1', '10.89.0.2/24', '10.89.0.1', undefined, undefined],
  ] as const) {
    await h('ip', 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', path(ns));
    await h('ip', 'link', 'set', veth, 'master', br, 'up');
    await i(ns, 'ip', 'addr', 'add', addr, 'dev', 'eth0');
    if (addr6) await i(ns, 'ip', '-6', 'addr', 'add', addr6, 'dev', 'eth0', 'nodad');
    await i(ns, 'ip', 'link', 'set', 'eth0', 'up');
    await i(ns, 'ip', 'route', 'add', 'default', 'via', gw);
    if (gw6) await i(ns, 'ip', '-6', 'route', 'add', 'default', 'via', gw6);
  }
  await h('ip', 'link', 'add', 'vn0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', path(n));
  await h('ip', 'addr', 'add', '192.168.77.1/24', 'dev', 'vn0');
  await h('ip', '-6', 'addr', 'add', 'fd77::1/64', 'dev', 'vn0', 'nodad');
  await h('ip', 'link', 'set', 'vn0', 'up');
  await i(n, 'ip', 'addr', 'add', '192.168.77.2/24', 'dev', 'eth0');
  await i(n, 'ip', '-6', 'addr', 'add', 'fd77::2/64', 'dev', 'eth0', 'nodad');
  await i(n, 'ip', 'link', 'set', 'eth0', 'up');
  // the neighbour may try the container addresses directly (must be dropped)
  await i(n, 'ip', 'route', 'add', '10.88.0.0/16', 'via', '192.168.77.1');
  await i(n, 'ip', '-6', 'route', 'add', 'fd88::/64', 'via', 'fd77::1');
  return { c, d, n };
}

export const NET1: NetworkPolicy = {
  networkId: 'n1' as NetworkId,
  bridge: 'tsbr0' as IfName,
  subnets: ['10.88.0.0/24' as Prefix, 'fd88::/64' as Prefix],
  masquerade: true,
  internal: false,
  icc: true,
};
export const NET2: NetworkPolicy = { ...NET1, networkId: 'n2' as NetworkId, bridge: 'tsbr1' as IfName, subnets: ['10.89.0.0/24' as Prefix] };
export const E1: EndpointPorts = {
  endpointId: 'e1' as EndpointId,
  networkId: 'n1' as NetworkId,
  bridge: 'tsbr0' as IfName,
  mappings: [
    m('tcp', [8080], [80], '10.88.0.2'),
    m('udp', [5353], [53], '10.88.0.2'),
    m('tcp', [9000, 9001], [9000, 9001], '10.88.0.2'),
    m('tcp', [7000, 7010], [80], '10.88.0.2'),
    m('tcp', [6000, 6001], [7000, 7001], '10.88.0.2'),
    m('tcp', [8081], [80], '10.88.0.2', '127.0.0.1'),
    m('tcp', [8080], [80], 'fd88::2'),
  ],
};
