import t from 'tap';
import { memoryHostLocal as memStore } from '../../test/helpers/host-local-memory.js';
import { ipamAdd, ipamCheck, ipamDel, ipamGc, ourAddresses, parseIpamConfig, requestedIps } from './ipam.js';

t.test('config: host-local defaults, legacy form, errors name the field', async (t) => {
  const c = parseIpamConfig({ type: 'tsnet-ipam', ranges: [[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd00::/64', gateway: 'fd00::fe' }]], routes: [{ dst: '0.0.0.0/0' }] });
  t.equal(c.ranges[0]?.[0]?.gateway, '10.1.0.1');
  t.equal(c.ranges[0]?.[0]?.start, 0x0a010001n);
  t.equal(c.ranges[0]?.[0]?.end, 0x0a0100fen, '.254 for IPv4');
  t.equal(c.ranges[1]?.[0]?.gateway, 'fd00::fe');
  const legacy = parseIpamConfig({ subnet: '10.2.0.0/16', rangeStart: '10.2.1.10', rangeEnd: '10.2.1.20', gateway: '10.2.0.254' });
  t.equal(legacy.ranges.length, 1);
  t.equal(legacy.ranges[0]?.[0]?.gateway, '10.2.0.254');
  t.throws(() => parseIpamConfig({ ranges: [[{ subnet: '10.0.0.0/24', rangeEnd: '10.0.0.1', rangeStart: '10.0.0.9' }]] }), /ipam\.ranges\[0\]\[0\]\.rangeStart/);
  t.throws(() => parseIpamConfig({ ranges: [[{ subnet: '10.0.0.0/24' }, { subnet: 'fd00::/64' }]] }), /mixes IPv4 and IPv6/);
  t.throws(() => parseIpamConfig({ ranges: [[{ subnet: '10.0.0.0/31' }]] }), /too small/);
  t.throws(() => parseIpamConfig({}), /ipam\.ranges: missing/);
  t.same(requestedIps({ runtimeConfig: { ips: ['10.0.0.5/24'] } }, new Map()), ['10.0.0.5']);
  t.same(requestedIps({ args: { cni: { ips: ['10.0.0.6'] } } }, new Map([['IP', '10.0.0.7']])), ['10.0.0.6'], 'args.cni.ips before CNI_ARGS');
  t.same(requestedIps({}, new Map([['IP', '10.0.0.7,fd00::7']])), ['10.0.0.7', 'fd00::7']);
});

t.test('allocation: round robin after last_reserved_ip, skips the gateway, wraps, exhausts, rolls back', async (t) => {
  const s = memStore();
  const cfg = parseIpamConfig({ ranges: [[{ subnet: '10.0.0.0/29' }], [{ subnet: 'fd00::/125' }]] });
  const r1 = await ipamAdd(s, cfg, { containerId: 'a', ifName: 'eth0' }, []);
  t.same(r1.ips, [{ address: '10.0.0.2/29', gateway: '10.0.0.1' }, { address: 'fd00::2/125', gateway: 'fd00::1' }], 'first free after the gateway, one per range set');
  t.equal(s.files.get('10.0.0.2'), 'a\r\neth0', 'host-local file content');
  t.equal(s.files.get('last_reserved_ip.0'), '10.0.0.2');
  const r2 = await ipamAdd(s, cfg, { containerId: 'b', ifName: 'eth0' }, []);
  t.equal(r2.ips?.[0]?.address, '10.0.0.3/29');
  await ipamDel(s, { containerId: 'a', ifName: 'eth0' }, ourAddresses(cfg, r1));
  const r3 = await ipamAdd(s, cfg, { containerId: 'c', ifName: 'eth0' }, []);
  t.equal(r3.ips?.[0]?.address, '10.0.0.4/29', 'continues after the last reservation, not the freed one');
  for (const id of ['d', 'e', 'f']) await ipamAdd(s, cfg, { containerId: id, ifName: 'eth0' }, []);
  // .2-.6 usable (.1 gateway, .7 broadcast): .3 .4 .5 .6 .2 taken now
  t.equal(s.files.get('10.0.0.2'), 'f\r\neth0', 'wrapped around to the freed address');
  const before = new Map(s.files);
  await t.rejects(ipamAdd(s, cfg, { containerId: 'g', ifName: 'eth0' }, []), { code: 'EXHAUSTED' });
  t.same([...s.files.keys()].sort(), [...before.keys()].sort(), 'nothing left behind by the failed allocation');
  await t.rejects(ipamAdd(s, cfg, { containerId: 'h', ifName: 'eth0' }, ['10.9.9.9' as never]), /in none of the configured ranges/);
});

t.test('CHECK, DEL without prevResult (walk), legacy files, GC', async (t) => {
  const s = memStore();
  const cfg = parseIpamConfig({ ranges: [[{ subnet: '10.0.0.0/24' }]] });
  const r = await ipamAdd(s, cfg, { containerId: 'a', ifName: 'eth0' }, []);
  await ipamCheck(s, cfg, { containerId: 'a', ifName: 'eth0' }, r);
  await t.rejects(ipamCheck(s, cfg, { containerId: 'a', ifName: 'eth1' }, r), /not reserved for a\/eth1/);
  s.files.set('10.0.0.99', 'legacy');
  await ipamAdd(s, cfg, { containerId: 'b', ifName: 'eth0' }, []);
  await ipamDel(s, { containerId: 'a', ifName: 'eth0' }, []);
  t.notOk(s.files.has('10.0.0.2'), 'released by walking');
  t.same(await ipamGc(s, [{ containerId: 'legacy', ifName: 'eth0' }], () => true), ['10.0.0.3'], 'GC keeps the legacy file of a valid container');
  t.same(await ipamGc(s, [], () => true), ['10.0.0.99']);
});
