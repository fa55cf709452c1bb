import t from 'tap';
import type { IfName, IpAddr } from '../../core/net.js';
import { tcArgs } from '../../sys/tc.js';
import { parseBandwidth, parseBridgeConf } from './bridge.js';
import { cniEndpointId, cniEndpointPrefix, cniNetworkId, hostVethName, parsePortMappings, toFirewallMappings } from './names.js';

t.test('names: deterministic, valid, distinct', async (t) => {
  const v = hostVethName('net', 'c1', 'eth0');
  t.match(v, /^veth[0-9a-f]{8}$/);
  t.equal(v, hostVethName('net', 'c1', 'eth0'), 'deterministic');
  t.not(v, hostVethName('net', 'c1', 'eth1'));
  t.not(v, hostVethName('net2', 'c1', 'eth0'));
  t.equal(cniNetworkId('podman'), 'cni-podman');
  t.match(cniNetworkId('My_Net'), /^cni-my_net-[0-9a-f]{6}$/, 'case folded with a hash');
  t.not(cniNetworkId('My_Net'), cniNetworkId('my_net'));
  t.ok(cniEndpointId('n', 'c', 'eth0').startsWith(cniEndpointPrefix('n')));
  t.notOk(cniEndpointId('n', 'c', 'eth0').startsWith(cniEndpointPrefix('m')));
});

t.test('portMappings → firewall mappings per address family', async (t) => {
  const specs = parsePortMappings({ runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 8080, protocol: 'TCP' }, { hostPort: 53, containerPort: 53, protocol: 'udp', hostIP: '127.0.0.1' }] } });
  const m = toFirewallMappings(specs, ['10.0.0.2', 'fd00::2'] as IpAddr[]);
  t.equal(m.length, 3, 'unspecified host address: both families; 127.0.0.1: IPv4 only');
  t.same(m.map((x) => `${x.proto} ${x.hostIp ?? '*'} ${x.hostPort.start}->${x.containerIp}:${x.containerPort.start}`), ['tcp * 80->10.0.0.2:8080', 'tcp * 80->fd00::2:8080', 'udp 127.0.0.1 53->10.0.0.2:53']);
  t.throws(() => parsePortMappings({ runtimeConfig: { portMappings: [{ hostPort: 0, containerPort: 1 }] } }), /portMappings\[0\]\.hostPort/);
  t.same(parsePortMappings({}), []);
});

t.test('bridge configuration and bandwidth parsing', async (t) => {
  const c = parseBridgeConf({ ipam: { ranges: [[{ subnet: '10.0.0.0/24' }]] } });
  t.same([c.bridge, c.isGateway, c.ipMasq, c.ipamType, c.ipam?.ranges.length], ['cni0', false, false, 'tsnet-ipam', 1], 'reference defaults, IPAM built in');
  const d = parseBridgeConf({ isDefaultGateway: true, ipam: { type: 'host-local' } });
  t.same([d.isGateway, d.ipam, d.ipamType], [true, undefined, 'host-local'], 'isDefaultGateway implies isGateway; other IPAM delegated');
  t.throws(() => parseBridgeConf({ ipam: {}, mtu: 70000 }), /mtu/);
  t.same(parseBandwidth({ runtimeConfig: { bandwidth: { ingressRate: 1000, ingressBurst: 100 } } }), { ingressRate: 1000, ingressBurst: 100 });
  t.throws(() => parseBandwidth({ runtimeConfig: { bandwidth: { egressRate: 1000 } } }), /egressBurst/);
  t.same(tcArgs('eth0' as IfName, { rate: 8_000_000, burst: 80_000 }), ['qdisc', 'replace', 'dev', 'eth0', 'root', 'tbf', 'rate', '8000000bit', 'burst', '10000', 'latency', '25ms']);
  t.throws(() => tcArgs('eth0' as IfName, { rate: 0, burst: 1 }), /positive/);
});
