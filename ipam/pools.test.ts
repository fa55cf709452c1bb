import t, { type Test } from 'tap';
import { TsnetError } from '../core/errors.js';
import { parseNetworkId, parsePrefix, type Prefix } from '../core/net.js';
import type { PoolRecord, PoolRequest } from './api.js';
import { parsePoolRecord, poolIdFor } from './api.js';
import {
  buildPoolRecord, capacity, checkSubnetUsable, conflictError, defaultPoolsExhausted, findConflict, pickDefaultSubnet,
  resolveDefaultPools, ulaPrefix, validatePoolRequest,
} from './pools.js';

const net = parseNetworkId('n1');
const pfx = (s: string): Prefix => parsePrefix(s);

/** Asserts fn throws INVALID_CONFIG naming `field`, with a message matching `msg`. */
function invalid(t: Test, fn: () => unknown, field: string, msg: RegExp): void {
  try {
    fn();
    t.fail(`expected INVALID_CONFIG for ${field}`);
  } catch (err) {
    t.ok(err instanceof TsnetError, 'TsnetError');
    t.equal((err as TsnetError).code, 'INVALID_CONFIG');
    t.equal((err as TsnetError).details['field'], field, `details.field = ${field}`);
    t.match((err as TsnetError).message, msg);
  }
}

const req = (r: Omit<PoolRequest, 'networkId'>): PoolRequest => ({ networkId: net, ...r });

function record(networkId: string, subnet: string, name = networkId): PoolRecord {
  const v = validatePoolRequest({ networkId: parseNetworkId(networkId), networkName: name, subnet });
  return buildPoolRecord(v, v.subnet!, 'user');
}

t.test('ULA prefix: RFC 4193 fd00::/8 + 40-bit global id, stable per seed, distinct across seeds', async (t) => {
  const a = ulaPrefix('engine-a');
  t.match(a, /^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}::\/48$/);
  t.equal(ulaPrefix('engine-a'), a, 'same seed, same prefix');
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) seen.add(ulaPrefix(`host-${i}`));
  t.equal(seen.size, 200, '200 seeds give 200 different prefixes');
  // sha256("engine-a") starts with these bytes; the prefix is fd + its first five bytes
  const { createHash } = await import('node:crypto');
  const h = createHash('sha256').update('engine-a').digest('hex');
  t.equal(a, parsePrefix(`fd${h.slice(0, 2)}:${h.slice(2, 6)}:${h.slice(6, 10)}::/48`));
  invalid(t, () => ulaPrefix(''), 'ula-seed', /non-empty/);
});

t.test('default pools: validated, ULA appended when no IPv6 pool is configured', async (t) => {
  const d = resolveDefaultPools(undefined, 'seed');
  t.same(d.map((p) => [p.base, p.size, p.family]), [
    ['10.89.0.0/16', 24, 4],
    ['10.90.0.0/16', 24, 4],
    [ulaPrefix('seed'), 64, 6],
  ]);
  const custom = resolveDefaultPools([{ base: '172.30.0.0/16', size: 26 }, { base: 'fd11::/48', size: 64 }], 'seed');
  t.same(custom.map((p) => p.base), ['172.30.0.0/16', 'fd11::/48'], 'configured IPv6 pool replaces the ULA');
  invalid(t, () => resolveDefaultPools([{ base: '10.0.0.0/16', size: 8 }], 's'), 'default-address-pools', /size 8 .* from 16 to 30/);
  invalid(t, () => resolveDefaultPools([{ base: '10.0.0.0/16', size: 31 }], 's'), 'default-address-pools', /from 16 to 30/);
  invalid(t, () => resolveDefaultPools([{ base: '10.0.0.1/16', size: 24 }], 's'), 'default-address-pools', /host bits set/);
  invalid(t, () => resolveDefaultPools([{ base: '127.0.0.0/16', size: 24 }], 's'), 'default-address-pools', /reserved range 127\.0\.0\.0\/8/);
  invalid(t, () => resolveDefaultPools([{ base: 'fd00::/48', size: 128 }], 's'), 'default-address-pools', /from 48 to 126/);
});

t.test('pool request validation names the field and the fix', async (t) => {
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.5/24' })), 'subnet', /did you mean 10\.1\.0\.0\/24/);
  invalid(t, () => validatePoolRequest(req({ subnet: 'nope' })), 'subnet', /CIDR/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', family: 6 })), 'subnet', /IPv4 but an IPv6 pool/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/31' })), 'subnet', /too small .* \/31 .* use a \/30 or larger/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.7/32' })), 'subnet', /too small/);
  invalid(t, () => validatePoolRequest(req({ subnet: 'fd00::/127' })), 'subnet', /IPv6 \/127 .* \/126 or larger/);
  invalid(t, () => validatePoolRequest(req({ subnet: 'fd00::/128' })), 'subnet', /too small/);
  invalid(t, () => validatePoolRequest(req({ subnet: '127.0.0.0/24' })), 'subnet', /reserved range 127\.0\.0\.0\/8/);
  invalid(t, () => validatePoolRequest(req({ subnet: '224.1.0.0/24' })), 'subnet', /reserved range/);
  invalid(t, () => validatePoolRequest(req({ subnet: 'ff02::/64' })), 'subnet', /reserved range ff00::\/8/);

  invalid(t, () => validatePoolRequest(req({ gateway: '10.1.0.1' })), 'gateway', /needs an explicit subnet: add --subnet/);
  invalid(t, () => validatePoolRequest(req({ ipRange: '10.1.0.0/25' })), 'ip-range', /needs an explicit subnet/);
  invalid(t, () => validatePoolRequest(req({ auxAddresses: { r: '10.1.0.9' } })), 'aux-address', /needs an explicit subnet/);

  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', gateway: '10.2.0.1' })), 'gateway', /gateway 10\.2\.0\.1 is outside subnet 10\.1\.0\.0\/24; .* such as 10\.1\.0\.1/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', gateway: '10.1.0.0' })), 'gateway', /network address/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', gateway: '10.1.0.255' })), 'gateway', /broadcast address/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', gateway: 'fd00::1' })), 'gateway', /not an IPv4 address/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', gateway: '10.1.0' })), 'gateway', /four dotted decimals/);
  invalid(t, () => validatePoolRequest(req({ subnet: 'fd00::/64', gateway: 'fd00::' })), 'gateway', /network address/);
  t.equal(validatePoolRequest(req({ subnet: 'fd00::/64', gateway: 'fd00::ffff:ffff:ffff:ffff' })).gateway, 'fd00::ffff:ffff:ffff:ffff', 'IPv6 has no broadcast');

  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', ipRange: '10.2.0.0/25' })), 'ip-range', /not inside subnet 10\.1\.0\.0\/24/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', ipRange: '10.1.0.0/23' })), 'ip-range', /not inside subnet/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', ipRange: '10.1.0.3/25' })), 'ip-range', /did you mean 10\.1\.0\.0\/25/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', ipRange: 'fd00::/64' })), 'ip-range', /not inside/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', ipRange: '10.1.0.0/31' })), 'ip-range', /leaves no address/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', ipRange: '10.1.0.255/32' })), 'ip-range', /leaves no address/);

  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', auxAddresses: { r: '10.9.0.1' } })), 'aux-address', /aux-address r=10\.9\.0\.1 is outside subnet/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', auxAddresses: { r: '10.1.0.1' } })), 'aux-address', /is the gateway address/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', auxAddresses: { r: '10.1.0.255' } })), 'aux-address', /broadcast/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', auxAddresses: { a: '10.1.0.9', b: '10.1.0.9' } })), 'aux-address', /already reserved as aux-address a/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', auxAddresses: { 'a b': '10.1.0.9' } })), 'aux-address', /name/);
  invalid(t, () => validatePoolRequest(req({ subnet: '10.1.0.0/24', auxAddresses: { r: 'x' } })), 'aux-address', /not an IPv4 or IPv6/);
});

t.test('valid pool requests are normalised', async (t) => {
  const v = validatePoolRequest(req({ subnet: '10.1.0.0/24', gateway: '10.1.0.254', ipRange: '10.1.0.128/25', auxAddresses: { router: '10.1.0.2' } }));
  t.same(v, {
    networkId: 'n1',
    networkName: 'n1',
    family: 4,
    subnet: '10.1.0.0/24',
    gateway: '10.1.0.254',
    ipRange: '10.1.0.128/25',
    auxAddresses: { router: '10.1.0.2' },
  });
  const rec = buildPoolRecord(v, v.subnet!, 'user');
  t.equal(rec.poolId, poolIdFor(net, 4));
  t.equal(rec.poolId, 'n1-ipv4');
  t.same(parsePoolRecord(JSON.parse(JSON.stringify(rec))), rec, 'record survives a JSON round trip through the schema');
  const v6 = validatePoolRequest(req({ subnet: 'FD00:0:0:1::/64' }));
  t.equal(v6.family, 6);
  t.equal(buildPoolRecord(v6, v6.subnet!, 'user').gateway, 'fd00:0:0:1::1', 'default gateway is the first host address');
  t.same(validatePoolRequest(req({ family: 6 })), { networkId: 'n1', networkName: 'n1', family: 6, auxAddresses: {} });
  t.doesNotThrow(() => checkSubnetUsable(pfx('10.0.0.0/30')));
  t.doesNotThrow(() => checkSubnetUsable(pfx('fd00::/126')));
});

t.test('parsePoolRecord rejects malformed records', async (t) => {
  const good = record('web', '10.89.0.0/24');
  const bad = (patch: Record<string, unknown>, re: RegExp) => {
    try {
      parsePoolRecord({ ...good, ...patch });
      t.fail('expected rejection');
    } catch (err) {
      t.equal((err as TsnetError).code, 'INVALID_CONFIG');
      t.match((err as Error).message, re);
    }
  };
  bad({ subnet: '10.89.0.1/24' }, /subnet/);
  bad({ gateway: '10.89.0.01' }, /gateway/);
  bad({ extra: 1 }, /extra/);
  bad({ schemaVersion: 2 }, /schemaVersion/);
  bad({ family: 6 }, /family 6 does not match/);
});

t.test('capacity counts what can be handed out', async (t) => {
  const c = capacity(pfx('10.0.0.0/29'), undefined, parsePrefix('10.0.0.1/32').split('/')[0] as never, []);
  t.equal(c.free, 5n, '/29: 8 - network - broadcast - gateway');
  const c6 = capacity(pfx('fd00::/64'), undefined, 'fd00::1' as never, ['fd00::2' as never, '10.0.0.1' as never]);
  t.equal(c6.free, (1n << 64n) - 3n, 'a /64: minus anycast, gateway, one aux (other-family aux ignored)');
  const r = capacity(pfx('10.0.0.0/24'), pfx('10.0.0.128/30'), '10.0.0.1' as never, ['10.0.0.129' as never]);
  t.equal(r.free, 3n, 'ip-range of 4 minus one aux inside it; gateway outside it does not count');
});

t.test('overlap check: pools first, then host routes; default routes ignored', async (t) => {
  const web = record('web', '10.89.0.0/16');
  const db = record('db', 'fd00:1::/64');
  t.equal(findConflict(pfx('10.89.3.0/24'), [web, db], []) && 'network', 'network');
  const c = findConflict(pfx('10.89.3.0/24'), [db, web], [pfx('10.89.0.0/24')]);
  t.ok(c && c.kind === 'network' && c.pool.networkId === 'web', 'the network wins over the route');
  const e = conflictError(pfx('10.89.3.0/24'), c!);
  t.equal(e.code, 'INVALID_CONFIG');
  t.equal(e.details['field'], 'subnet');
  t.equal(e.message, 'subnet 10.89.3.0/24 overlaps network "web" (10.89.0.0/16); choose another --subnet or remove that network');
  const r = findConflict(pfx('192.168.1.0/24'), [web], [pfx('0.0.0.0/0'), pfx('192.168.0.0/16'), pfx('::/0')]);
  t.same(r, { kind: 'route', route: '192.168.0.0/16' });
  t.match(conflictError(pfx('192.168.1.0/24'), r!).message, /overlaps the host route 192\.168\.0\.0\/16 .* choose another --subnet/);
  t.equal(findConflict(pfx('172.16.0.0/24'), [web], [pfx('0.0.0.0/0')]), undefined, 'the default route is not a conflict');
  t.equal(findConflict(pfx('fd00:2::/64'), [web, db], [pfx('::/0'), pfx('fe80::/64')]), undefined);
  t.equal(findConflict(pfx('fd00:1::/48'), [web, db], [])?.kind, 'network', 'a larger subnet containing a pool conflicts');
});

t.test('default subnet choice walks /24s, skipping pools and host routes', async (t) => {
  const d = resolveDefaultPools(undefined, 'seed');
  t.equal(pickDefaultSubnet(4, d, [], []), '10.89.0.0/24', 'first /24');
  t.equal(pickDefaultSubnet(4, d, [record('a', '10.89.0.0/24')], []), '10.89.1.0/24', 'second /24');
  t.equal(pickDefaultSubnet(4, d, [record('a', '10.89.0.0/24'), record('b', '10.89.2.0/24')], []), '10.89.1.0/24', 'fills the gap');
  t.equal(pickDefaultSubnet(4, d, [record('a', '10.89.0.0/24')], [pfx('10.89.1.0/24'), pfx('10.89.2.7/32')]), '10.89.3.0/24', 'route /24 and a /32 host route both skipped');
  t.equal(pickDefaultSubnet(4, d, [], [pfx('10.89.0.0/17')]), '10.89.128.0/24', 'a /17 route skips 128 subnets in one step');
  t.equal(pickDefaultSubnet(4, d, [], [pfx('10.0.0.0/8')]), undefined, 'a VPN 10/8 route covers both default pools');
  t.equal(pickDefaultSubnet(4, d, [], [pfx('10.89.0.0/16')]), '10.90.0.0/24', 'next pool when the first is covered');
  t.equal(pickDefaultSubnet(4, d, [], [pfx('0.0.0.0/0')]), '10.89.0.0/24', 'default route ignored');
  t.equal(pickDefaultSubnet(4, d, [record('big', '10.88.0.0/15')], []), '10.90.0.0/24', 'a user pool spanning the first default pool');
  t.equal(pickDefaultSubnet(6, d, [], []), prefixOf(ulaPrefix('seed'), 64));
  const e = defaultPoolsExhausted(4, d);
  t.equal(e.code, 'EXHAUSTED');
  t.match(e.message, /10\.89\.0\.0\/16 in \/24s, 10\.90\.0\.0\/16 in \/24s: 512 subnets/);
  t.match(defaultPoolsExhausted(4, d.filter((p) => p.family === 6)).message, /no default IPv4 address pools are configured/);
});

function prefixOf(p: Prefix, len: number): Prefix {
  return parsePrefix(`${p.split('/')[0]}/${len}`);
}

t.test('default subnet choice is bounded: 4000 used /64s and 2000 used /24s', async (t) => {
  const d = resolveDefaultPools([{ base: '10.0.0.0/8', size: 24 }, { base: 'fd42::/48', size: 64 }], 'seed');
  const pools6: PoolRecord[] = [];
  for (let i = 0; i < 4000; i++) pools6.push(record(`v6-${i}`, `fd42:0:0:${i.toString(16)}::/64`));
  const pools4: PoolRecord[] = [];
  for (let i = 0; i < 2000; i++) pools4.push(record(`v4-${i}`, `10.${i >> 8}.${i & 255}.0/24`));
  const start = performance.now();
  t.equal(pickDefaultSubnet(6, d, pools6, []), 'fd42:0:0:fa0::/64', 'first free after 4000 (0xfa0)');
  t.equal(pickDefaultSubnet(4, d, pools4, []), '10.7.208.0/24', 'first free after 2000');
  const ms = performance.now() - start;
  t.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
});
