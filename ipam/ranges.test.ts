import t from 'tap';
import { parseIpAddr, parsePrefix } from '../core/net.js';
import {
  addrToBigInt, alignUp, allocRange, bigIntToAddr, blockSize, hostRange, intersect, offsetAddr, prefixAt, prefixRange,
  rangeSize, rangesOverlap, rangeWithin,
} from './ranges.js';

const ip = (s: string) => parseIpAddr(s);
const pfx = (s: string) => parsePrefix(s);

t.test('address <-> bigint round trips in canonical form', async (t) => {
  t.equal(addrToBigInt(ip('0.0.0.0')), 0n);
  t.equal(addrToBigInt(ip('10.89.0.1')), (10n << 24n) | (89n << 16n) | 1n);
  t.equal(addrToBigInt(ip('255.255.255.255')), 0xffffffffn);
  t.equal(bigIntToAddr(0xffffffffn, 4), '255.255.255.255');
  t.equal(addrToBigInt(ip('::1')), 1n);
  t.equal(addrToBigInt(ip('fd00::')), 0xfdn << 120n);
  t.equal(bigIntToAddr((1n << 128n) - 1n, 6), 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff');
  for (const s of ['10.0.0.0', '192.168.255.254', 'fd12:3456:789a:1::5', '2001:db8::1', '::', 'fe80::1:0:0:1', '2001:db8:0:1:1:1:1:1']) {
    t.equal(bigIntToAddr(addrToBigInt(ip(s)), s.includes(':') ? 6 : 4), ip(s), `round trip ${s}`);
  }
  // RFC 5952: the longest zero run is compressed, the first of equal runs
  t.equal(bigIntToAddr(addrToBigInt(ip('2001:0:0:1:0:0:0:1')), 6), '2001:0:0:1::1');
  t.throws(() => bigIntToAddr(1n << 32n, 4), RangeError);
  t.throws(() => bigIntToAddr(-1n, 6), RangeError);
});

t.test('prefix ranges and sizes', async (t) => {
  t.same(prefixRange(pfx('10.1.2.3/24')), { family: 4, first: addrToBigInt(ip('10.1.2.0')), last: addrToBigInt(ip('10.1.2.255')) });
  t.equal(rangeSize(prefixRange(pfx('10.0.0.0/8'))), 1n << 24n);
  t.equal(rangeSize(prefixRange(pfx('0.0.0.0/0'))), 1n << 32n);
  t.equal(rangeSize(prefixRange(pfx('fd00::/64'))), 1n << 64n);
  t.equal(blockSize(48, 6), 1n << 80n);
  t.equal(prefixAt(addrToBigInt(ip('10.89.7.0')), 24, 4), '10.89.7.0/24');
  t.equal(prefixAt(0xfdn << 120n, 48, 6), 'fd00::/48');
});

t.test('overlap, containment, intersection', async (t) => {
  const a = prefixRange(pfx('10.0.0.0/16'));
  const b = prefixRange(pfx('10.0.255.0/24'));
  const c = prefixRange(pfx('10.1.0.0/24'));
  t.ok(rangesOverlap(a, b));
  t.notOk(rangesOverlap(a, c));
  t.notOk(rangesOverlap(prefixRange(pfx('0.0.0.0/0')), prefixRange(pfx('::/0'))), 'families never overlap');
  t.ok(rangeWithin(b, a));
  t.notOk(rangeWithin(a, b));
  t.same(intersect(a, b), b);
  t.equal(intersect(a, c), undefined);
});

t.test('host ranges exclude network and (IPv4) broadcast', async (t) => {
  const h = hostRange(pfx('10.0.0.0/29'));
  t.equal(h && bigIntToAddr(h.first, 4), '10.0.0.1');
  t.equal(h && bigIntToAddr(h.last, 4), '10.0.0.6');
  t.equal(hostRange(pfx('10.0.0.0/30')) && rangeSize(hostRange(pfx('10.0.0.0/30'))!), 2n);
  t.equal(hostRange(pfx('10.0.0.0/31')), undefined);
  t.equal(hostRange(pfx('10.0.0.0/32')), undefined);
  const h6 = hostRange(pfx('fd00::/126'));
  t.equal(h6 && bigIntToAddr(h6.first, 6), 'fd00::1');
  t.equal(h6 && bigIntToAddr(h6.last, 6), 'fd00::3', 'IPv6 has no broadcast address');
  t.equal(hostRange(pfx('fd00::/128')), undefined);
});

t.test('allocRange clips the ip-range to host addresses', async (t) => {
  const r = allocRange(pfx('10.0.0.0/24'), pfx('10.0.0.0/25'));
  t.equal(r && bigIntToAddr(r.first, 4), '10.0.0.1', 'network address removed');
  t.equal(r && bigIntToAddr(r.last, 4), '10.0.0.127');
  const r2 = allocRange(pfx('10.0.0.0/24'), pfx('10.0.0.128/25'));
  t.equal(r2 && bigIntToAddr(r2.last, 4), '10.0.0.254', 'broadcast removed');
  t.equal(allocRange(pfx('10.0.0.0/24'), pfx('10.0.0.255/32')), undefined, 'only the broadcast address: nothing left');
});

t.test('alignUp and offsetAddr', async (t) => {
  t.equal(alignUp(0n, 256n), 0n);
  t.equal(alignUp(1n, 256n), 256n);
  t.equal(alignUp(256n, 256n), 256n);
  t.equal(alignUp(257n, 256n), 512n);
  t.equal(offsetAddr(ip('10.0.0.255'), 1n), '10.0.1.0');
  t.equal(offsetAddr(ip('fd00::ffff'), 1n), 'fd00::1:0');
  t.throws(() => offsetAddr(ip('255.255.255.255'), 1n), RangeError);
});

t.test('IPv6 text forms: fast path agrees with ipaddr.js; invalid text throws', async (t) => {
  const forms = ['::', '::1', '1::', 'fd00::', 'fd00::1:0:0:1', '1:2:3:4:5:6:7:8', '1:2:3:4:5:6::8', '1::3:4:5:6:7:8', 'FD00::AB', '::ffff:1.2.3.4'];
  for (const f of forms) {
    t.equal(addrToBigInt(f as never), addrToBigInt(ip(f)), f);
  }
  t.equal(addrToBigInt('::ffff:1.2.3.4' as never), 0xffff01020304n);
  t.equal(addrToBigInt('1:2:3:4:5:6:7:8' as never), 0x00010002000300040005000600070008n);
  for (const bad of ['1:2:3:4:5:6:7:8:9', 'fd00:::1', 'fd00::g', '1:2', '1::2::3']) {
    t.throws(() => addrToBigInt(bad as never), `${bad} throws`);
  }
});
