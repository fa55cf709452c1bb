import t from 'tap';
import type { IpAddr, Port } from '../core/net.js';
import { assignHostPorts, type HostFacts, type PortAsk } from './ports.js';

const r = (a: number, b = a): { start: Port; end: Port } => ({ start: a as Port, end: b as Port });
const ip = (s: string): IpAddr => s as IpAddr;
const facts = (over: Partial<HostFacts> = {}): HostFacts => ({
  taken: [], listeners: [], localAddrs: [ip('192.168.50.1'), ip('127.0.0.1'), ip('fd00::1')], ephemeral: r(40000, 40009), families: [4], ...over,
});
const ask = (o: Partial<PortAsk> & { containerPort?: PortAsk['containerPort'] } = {}): PortAsk => ({ proto: 'tcp', containerPort: r(80), ...o });

t.test('explicit host ports: granted, or refused naming what holds them', async (t) => {
  t.same(assignHostPorts([ask({ hostPort: r(8080) })], facts()), [ask({ hostPort: r(8080) })]);
  const taken = facts({ taken: [{ proto: 'tcp', family: 4, hostPort: r(8000, 8100) }] });
  t.throws(() => assignHostPorts([ask({ hostPort: r(8080) })], taken), { code: 'ALREADY_EXISTS', message: /^publish: cannot publish 0\.0\.0\.0:8080\/tcp: 0\.0\.0\.0:8000-8100\/tcp is already published by another container/ });
  t.same(assignHostPorts([ask({ proto: 'udp', hostPort: r(8080) })], taken).length, 1, 'another protocol is free');
  t.same(assignHostPorts([ask({ hostPort: r(8101) })], taken).length, 1, 'outside the taken range is free');
  const onLo = facts({ taken: [{ proto: 'tcp', hostIp: ip('127.0.0.1'), family: 4, hostPort: r(8080) }] });
  t.same(assignHostPorts([ask({ hostIp: ip('192.168.50.1'), hostPort: r(8080) })], onLo).length, 1, 'another host address is free');
  t.throws(() => assignHostPorts([ask({ hostPort: r(8080) })], onLo), { code: 'ALREADY_EXISTS' }, 'all addresses include 127.0.0.1');
  const v6only = facts({ taken: [{ proto: 'tcp', family: 6, hostPort: r(8080) }], families: [4] });
  t.same(assignHostPorts([ask({ hostPort: r(8080) })], v6only).length, 1, 'an IPv6 mapping does not hold the IPv4 port');
  t.throws(() => assignHostPorts([ask({ hostPort: r(8080) }), ask({ hostPort: r(8080), containerPort: r(81) })], facts()), { code: 'ALREADY_EXISTS' }, 'two asks for one port in one request');
});

t.test('host processes that listen are respected', async (t) => {
  const f = (l: HostFacts['listeners']): HostFacts => facts({ listeners: l, families: [4, 6] });
  t.throws(() => assignHostPorts([ask({ hostPort: r(8080) })], f([{ proto: 'tcp', ip: ip('0.0.0.0'), port: 8080 as Port }])), { code: 'ALREADY_EXISTS', message: /tcp port 8080 is in use by a process on the host \(listening on 0\.0\.0\.0:8080\)/ });
  t.throws(() => assignHostPorts([ask({ hostIp: ip('127.0.0.1'), hostPort: r(8080) })], f([{ proto: 'tcp', ip: '*', port: 8080 as Port }])), { code: 'ALREADY_EXISTS' }, '* holds every address');
  t.throws(() => assignHostPorts([ask({ hostIp: ip('127.0.0.1'), hostPort: r(8080) })], f([{ proto: 'tcp', ip: ip('::'), port: 8080 as Port }])), { code: 'ALREADY_EXISTS' }, '[::] takes IPv4 too');
  t.throws(() => assignHostPorts([ask({ hostPort: r(8000, 8100) , containerPort: r(8000, 8100) })], f([{ proto: 'tcp', ip: ip('127.0.0.1'), port: 8050 as Port }])), { code: 'ALREADY_EXISTS' }, 'a listener inside a range');
  t.same(assignHostPorts([ask({ hostIp: ip('192.168.50.1'), hostPort: r(8080) })], f([{ proto: 'tcp', ip: ip('127.0.0.1'), port: 8080 as Port }])).length, 1, 'a listener on another address');
  t.same(assignHostPorts([ask({ proto: 'udp', hostPort: r(8080) })], f([{ proto: 'tcp', ip: '*', port: 8080 as Port }])).length, 1, 'a TCP listener does not hold UDP');
});

t.test('ephemeral ports come from the range, skip what is held, and blocks are contiguous', async (t) => {
  const held = facts({ listeners: [{ proto: 'tcp', ip: ip('0.0.0.0'), port: 40000 as Port }], taken: [{ proto: 'tcp', family: 4, hostPort: r(40001) }] });
  t.same(assignHostPorts([ask()], held)[0]?.hostPort, r(40002), 'the first free one from the start');
  t.same(assignHostPorts([ask()], held, 5)[0]?.hostPort, r(40005), 'the search starts at the offset');
  t.same(assignHostPorts([ask()], held, 9)[0]?.hostPort, r(40009), '... and wraps');
  t.same(assignHostPorts([ask(), ask({ containerPort: r(81) })], held).map((a) => a.hostPort), [r(40002), r(40003)], 'two asks get two ports');
  t.same(assignHostPorts([ask({ containerPort: r(7000, 7002) })], held)[0]?.hostPort, r(40002, 40004), 'a block for a container range');
  t.throws(() => assignHostPorts([ask({ containerPort: r(7000, 7009) })], held), { code: 'EXHAUSTED', message: /no free tcp port block of 10 in the ephemeral range 40000-40009/ });
  t.same(assignHostPorts([ask({ within: r(8000, 8002) })], facts({ taken: [{ proto: 'tcp', family: 4, hostPort: r(8000) }] }))[0]?.hostPort, r(8001), '8000-8002:80 picks a free one of the host range');
  t.throws(() => assignHostPorts([ask({ within: r(8000, 8001) })], facts({ taken: [{ proto: 'tcp', family: 4, hostPort: r(8000, 8001) }] })), { code: 'ALREADY_EXISTS', message: /no free tcp port in the range 8000-8001/ });
});

t.test('a host address must be one of the host', async (t) => {
  t.throws(() => assignHostPorts([ask({ hostIp: ip('203.0.113.9'), hostPort: r(8080) })], facts()), { code: 'INVALID_CONFIG', message: /host address 203\.0\.113\.9 is not an address of this host/ });
  t.same(assignHostPorts([ask({ hostIp: ip('0.0.0.0'), hostPort: r(8080) })], facts()).length, 1, 'the unspecified address is every address');
  t.same(assignHostPorts([ask({ hostIp: ip('fd00::1'), hostPort: r(8080) })], facts()).length, 1);
});
