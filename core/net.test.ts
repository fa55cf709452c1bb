import t, { type Test } from 'tap';
import { TsnetError } from './errors.js';
import {
  parseIfName, parseIpAddr, parsePrefix, parseSubnet, prefixNetwork, prefixContains, prefixesOverlap,
  parsePort, parseProto, parseMac, parseNetnsPath, parseNetworkId, addrFamily,
} from './net.js';

const rejects = (t: Test, fn: () => unknown, field: string) => {
  try {
    fn();
    t.fail('expected INVALID_CONFIG');
  } catch (err) {
    t.ok(err instanceof TsnetError, 'is TsnetError');
    t.equal((err as TsnetError).code, 'INVALID_CONFIG');
    t.match((err as TsnetError).message, field, 'names the field');
    t.equal((err as TsnetError).details['field'], field);
  }
};

t.test('parseIfName', async (t) => {
  t.equal(parseIfName('eth0'), 'eth0');
  t.equal(parseIfName('a'.repeat(15)), 'a'.repeat(15));
  rejects(t, () => parseIfName('a'.repeat(16), 'ifname'), 'ifname');
  rejects(t, () => parseIfName('a/b', 'ifname'), 'ifname');
  rejects(t, () => parseIfName('a b', 'ifname'), 'ifname');
  rejects(t, () => parseIfName('a:b', 'ifname'), 'ifname');
  rejects(t, () => parseIfName('', 'ifname'), 'ifname');
  rejects(t, () => parseIfName('..', 'ifname'), 'ifname');
  rejects(t, () => parseIfName('ab\n', 'ifname'), 'ifname');
  t.match(() => parseIfName('x'.repeat(16)), Function);
  try { parseIfName('x'.repeat(16)); } catch (e) { t.match((e as Error).message, /15 bytes/); }
});

t.test('addresses and prefixes', async (t) => {
  t.equal(parseIpAddr('10.0.0.1'), '10.0.0.1');
  t.equal(parseIpAddr('FD00:0:0::1'), 'fd00::1');
  rejects(t, () => parseIpAddr('10.0.0', 'ip'), 'ip');
  rejects(t, () => parseIpAddr('1', 'ip'), 'ip');
  rejects(t, () => parseIpAddr('300.1.1.1', 'ip'), 'ip');
  t.equal(parsePrefix('10.1.2.3/24'), '10.1.2.3/24');
  t.equal(parsePrefix('fd00:0::5/64'), 'fd00::5/64');
  rejects(t, () => parsePrefix('10.1.2.3', 'subnet'), 'subnet');
  rejects(t, () => parsePrefix('10.1.2.3/33', 'subnet'), 'subnet');
  rejects(t, () => parsePrefix('10.1.2/24', 'subnet'), 'subnet');
  rejects(t, () => parsePrefix('fd00::/129', 'subnet'), 'subnet');
  rejects(t, () => parsePrefix('10.0.0.0/2x', 'subnet'), 'subnet');
  t.equal(prefixNetwork(parsePrefix('10.1.2.3/20')), '10.1.0.0/20');
  t.equal(prefixNetwork(parsePrefix('fd00:1:2:3::9/48')), 'fd00:1:2::/48');
  t.equal(parseSubnet('10.1.0.0/16'), '10.1.0.0/16');
  try { parseSubnet('10.1.2.3/16'); t.fail(); } catch (e) { t.match((e as Error).message, /did you mean 10\.1\.0\.0\/16/); }
  t.ok(prefixContains(parsePrefix('10.1.0.0/16'), parseIpAddr('10.1.200.3')));
  t.notOk(prefixContains(parsePrefix('10.1.0.0/16'), parseIpAddr('10.2.0.3')));
  t.notOk(prefixContains(parsePrefix('10.1.0.0/16'), parseIpAddr('fd00::1')));
  t.ok(prefixesOverlap(parsePrefix('10.0.0.0/8'), parsePrefix('10.5.0.0/24')));
  t.notOk(prefixesOverlap(parsePrefix('10.0.0.0/24'), parsePrefix('10.0.1.0/24')));
  t.equal(addrFamily(parsePrefix('fd00::/8')), 6);
});

t.test('ports, protocols, macs, ids, netns paths', async (t) => {
  t.equal(parsePort(80), 80);
  t.equal(parsePort('65535'), 65535);
  rejects(t, () => parsePort(0, 'hostPort'), 'hostPort');
  rejects(t, () => parsePort(65536, 'hostPort'), 'hostPort');
  rejects(t, () => parsePort('8o', 'hostPort'), 'hostPort');
  rejects(t, () => parsePort(1.5, 'hostPort'), 'hostPort');
  t.equal(parseProto('TCP'), 'tcp');
  rejects(t, () => parseProto('icmp', 'protocol'), 'protocol');
  t.equal(parseMac('02-42-AC-11-00-02'), '02:42:ac:11:00:02');
  rejects(t, () => parseMac('01:00:5e:00:00:01', 'mac'), 'mac');
  rejects(t, () => parseMac('zz:00:5e:00:00:01', 'mac'), 'mac');
  t.equal(parseNetworkId('abc123'), 'abc123');
  rejects(t, () => parseNetworkId('../x', 'id'), 'id');
  t.same(parseNetnsPath('/run/netns/a'), { kind: 'path', path: '/run/netns/a' });
  rejects(t, () => parseNetnsPath('relative', 'CNI_NETNS'), 'CNI_NETNS');
  rejects(t, () => parseNetnsPath('/run/../etc', 'CNI_NETNS'), 'CNI_NETNS');
});
