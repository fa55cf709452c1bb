import t from 'tap';
import { TsnetError } from '../core/errors.js';
import { parseIpAddr, parseNetworkId, parsePrefix, type NetworkId, type Prefix } from '../core/net.js';
import type { DefaultPool, Ipam, IpamStore } from './api.js';
import { poolIdFor } from './api.js';
import { createIpam } from './allocator.js';
import { createMemoryIpamStore } from './memory-store.js';
import { ulaPrefix } from './pools.js';
import { offsetAddr } from './ranges.js';

const id = (s: string): NetworkId => parseNetworkId(s);
const pfx = (s: string): Prefix => parsePrefix(s);

interface Setup {
  readonly ipam: Ipam;
  readonly store: IpamStore;
  readonly routes: Prefix[];
}
function setup(opts: { store?: IpamStore; routes?: string[]; defaultPools?: DefaultPool[]; seed?: string } = {}): Setup {
  const store = opts.store ?? createMemoryIpamStore();
  const routes = (opts.routes ?? []).map(pfx);
  const ipam = createIpam({
    store,
    hostRoutes: async () => routes,
    ulaSeed: opts.seed ?? 'test-host',
    ...(opts.defaultPools !== undefined ? { defaultPools: opts.defaultPools } : {}),
  });
  return { ipam, store, routes };
}

type Method = keyof IpamStore;
const MUTATIONS: readonly Method[] = ['createPool', 'deletePool', 'reserve', 'release', 'setCursor'];

/** Wraps a store: records every call, and makes the listed methods fail (optionally only from the nth call). */
function instrument(inner: IpamStore, faults: Partial<Record<Method, { error: unknown; from?: number }>> = {}): IpamStore & { calls: Method[] } {
  const calls: Method[] = [];
  const counts = new Map<Method, number>();
  const proxy = new Proxy(inner, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (prop === 'calls') return calls;
      if (typeof value !== 'function') return value;
      const m = prop as Method;
      return (...args: unknown[]) => {
        calls.push(m);
        const n = (counts.get(m) ?? 0) + 1;
        counts.set(m, n);
        const f = faults[m];
        if (f !== undefined && n >= (f.from ?? 1)) return Promise.reject(f.error);
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return proxy as IpamStore & { calls: Method[] };
}

/** Resolves to the TsnetError `p` rejects with; fails the test if it resolves or rejects with anything else. */
async function fails(p: Promise<unknown>): Promise<TsnetError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof TsnetError) return err;
    throw new Error(`expected a TsnetError, got ${String(err)}`);
  }
  throw new Error('expected a rejection');
}

const diskFull = () => new TsnetError('UNAVAILABLE', 'write: no space left on device');

t.test('default pools: first /24, second, skipping host routes and existing pools, reusing released subnets', async (t) => {
  const { ipam, routes } = setup();
  const a = await ipam.requestPool({ networkId: id('a'), networkName: 'alpha' });
  t.same(
    { subnet: a.subnet, gateway: a.gateway, family: a.family, source: a.source, poolId: a.poolId, ipRange: a.ipRange, aux: a.auxAddresses },
    { subnet: '10.89.0.0/24', gateway: '10.89.0.1', family: 4, source: 'default', poolId: 'a-ipv4', ipRange: undefined, aux: {} },
  );
  t.equal((await ipam.requestPool({ networkId: id('b') })).subnet, '10.89.1.0/24', 'second network gets the second /24');
  routes.push(pfx('10.89.2.0/23'), pfx('0.0.0.0/0'));
  t.equal((await ipam.requestPool({ networkId: id('c') })).subnet, '10.89.4.0/24', 'host route 10.89.2.0/23 skipped, default route ignored');
  await ipam.requestPool({ networkId: id('d'), subnet: '10.89.5.0/24' });
  t.equal((await ipam.requestPool({ networkId: id('e') })).subnet, '10.89.6.0/24', 'a user subnet is skipped too');
  await ipam.releasePool(id('b'));
  t.equal((await ipam.requestPool({ networkId: id('f') })).subnet, '10.89.1.0/24', 'a released subnet is free again');
  t.same((await ipam.listPools()).map((p) => [p.networkId, p.subnet]), [
    ['a', '10.89.0.0/24'],
    ['c', '10.89.4.0/24'],
    ['d', '10.89.5.0/24'],
    ['e', '10.89.6.0/24'],
    ['f', '10.89.1.0/24'],
  ]);
});

t.test('default pools exhausted: EXHAUSTED says which pools and how many subnets', async (t) => {
  const { ipam } = setup({ defaultPools: [{ base: '10.200.0.0/23', size: 24 }], routes: ['10.200.1.0/24'] });
  t.equal((await ipam.requestPool({ networkId: id('a') })).subnet, '10.200.0.0/24');
  const err = await ipam.requestPool({ networkId: id('b') }).catch((e: unknown) => e);
  t.ok(err instanceof TsnetError);
  t.equal((err as TsnetError).code, 'EXHAUSTED');
  t.match((err as Error).message, /no free IPv4 subnet left in the default address pools \(10\.200\.0\.0\/23 in \/24s: 2 subnets/);
  t.match((err as Error).message, /pass --subnet/);
  t.equal((await ipam.requestPool({ networkId: id('c'), family: 6 })).subnet, `${ulaPrefix('test-host').split('/')[0]}/64`, 'IPv6 still comes from the ULA');
});

t.test('user subnet overlapping a network or a host route: error names the collision and the fix', async (t) => {
  const { ipam, store } = setup({ routes: ['192.168.0.0/16', '0.0.0.0/0'] });
  await ipam.requestPool({ networkId: id('w1'), networkName: 'web', subnet: '10.89.0.0/16' });
  const e1 = await fails(ipam.requestPool({ networkId: id('x'), subnet: '10.89.3.0/24' }));
  t.equal(e1.code, 'INVALID_CONFIG');
  t.equal(e1.message, 'subnet 10.89.3.0/24 overlaps network "web" (10.89.0.0/16); choose another --subnet or remove that network');
  t.same(e1.details, {
    field: 'subnet',
    value: '10.89.3.0/24',
    conflict: { kind: 'network', networkId: 'w1', networkName: 'web', subnet: '10.89.0.0/16' },
  });
  const e2 = await fails(ipam.requestPool({ networkId: id('x'), subnet: '10.0.0.0/8' }));
  t.match(e2.message, /subnet 10\.0\.0\.0\/8 overlaps network "web" \(10\.89\.0\.0\/16\)/, 'a larger subnet that contains a network');
  const e3 = await fails(ipam.requestPool({ networkId: id('x'), subnet: '192.168.10.0/24' }));
  t.equal(e3.code, 'INVALID_CONFIG');
  t.equal(e3.details['field'], 'subnet');
  t.match(e3.message, /subnet 192\.168\.10\.0\/24 overlaps the host route 192\.168\.0\.0\/16 .*choose another --subnet/);
  t.equal((await store.listPools()).length, 1, 'nothing was created');
  t.equal((await ipam.requestPool({ networkId: id('x'), subnet: '172.20.0.0/16' })).subnet, '172.20.0.0/16', 'default route does not block');
});

t.test('one pool per family per network; dual stack', async (t) => {
  const { ipam } = setup();
  const v4 = await ipam.requestPool({ networkId: id('ds'), networkName: 'dual' });
  const v6 = await ipam.requestPool({ networkId: id('ds'), family: 6 });
  const ula = ulaPrefix('test-host');
  t.equal(v6.subnet, `${ula.split('/')[0]}/64`, 'first /64 of the ULA /48');
  t.equal(v6.gateway, parseIpAddr(`${ula.split('/')[0]}1`), 'gateway ::1');
  const dup = await fails(ipam.requestPool({ networkId: id('ds'), subnet: '172.16.0.0/24' }));
  t.equal(dup.code, 'ALREADY_EXISTS');
  t.match(dup.message, /network "dual" already has an IPv4 pool \(10\.89\.0\.0\/24\)/);
  t.same((await ipam.getPools(id('ds'))).map((p) => p.family), [4, 6]);

  const a4 = await ipam.requestAddress({ networkId: id('ds'), owner: 'ep1' });
  const a6 = await ipam.requestAddress({ networkId: id('ds'), owner: 'ep1', family: 6 });
  t.equal(a4.address, '10.89.0.2/24');
  t.equal(a6.address, `${ula.split('/')[0]}2/64`);
  t.equal(a6.gateway, v6.gateway);
  t.equal(a6.family, 6);
  const s6 = await ipam.requestAddress({ networkId: id('ds'), owner: 'ep2', ip: `${ula.split('/')[0]}abcd` });
  t.equal(s6.family, 6, 'family follows the static address');
  t.same((await ipam.listAddresses(id('ds'))).map((a) => [a.address, a.owner]), [
    ['10.89.0.2/24', 'ep1'],
    [`${ula.split('/')[0]}2/64`, 'ep1'],
    [`${ula.split('/')[0]}abcd/64`, 'ep2'],
  ]);
  t.same(await ipam.releaseOwner('ep1'), [
    { networkId: 'ds', poolId: 'ds-ipv4', addr: '10.89.0.2', owner: 'ep1' },
    { networkId: 'ds', poolId: 'ds-ipv6', addr: `${ula.split('/')[0]}2`, owner: 'ep1' },
  ]);
  t.same((await ipam.listPools()).map((p) => p.subnet), [v4.subnet, v6.subnet]);
});

t.test('ULA subnets derive from the seed: stable per seed, different across seeds', async (t) => {
  const one = await setup({ seed: 'host-one' }).ipam.requestPool({ networkId: id('n'), family: 6 });
  const oneAgain = await setup({ seed: 'host-one' }).ipam.requestPool({ networkId: id('n'), family: 6 });
  const two = await setup({ seed: 'host-two' }).ipam.requestPool({ networkId: id('n'), family: 6 });
  t.equal(one.subnet, oneAgain.subnet);
  t.not(one.subnet, two.subnet);
  t.match(one.subnet, /^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}::\/64$/);
  t.throws(() => setup({ seed: '' }), { code: 'INVALID_CONFIG' });
  t.throws(() => setup({ defaultPools: [{ base: '10.0.0.0/24', size: 16 }] }), { code: 'INVALID_CONFIG' });
});

t.test('validation errors name the field and happen before any store call', async (t) => {
  const store = instrument(createMemoryIpamStore());
  const { ipam } = setup({ store });
  const cases: [Parameters<Ipam['requestPool']>[0], string, RegExp][] = [
    [{ networkId: id('n'), subnet: '10.1.0.1/24' }, 'subnet', /did you mean 10\.1\.0\.0\/24/],
    [{ networkId: id('n'), subnet: '10.1.0.0/31' }, 'subnet', /too small/],
    [{ networkId: id('n'), subnet: '10.1.0.0/24', gateway: '10.1.1.1' }, 'gateway', /gateway 10\.1\.1\.1 is outside subnet 10\.1\.0\.0\/24/],
    [{ networkId: id('n'), subnet: '10.1.0.0/24', gateway: '10.1.0.255' }, 'gateway', /broadcast/],
    [{ networkId: id('n'), gateway: '10.1.0.1' }, 'gateway', /needs an explicit subnet/],
    [{ networkId: id('n'), subnet: '10.1.0.0/24', ipRange: '10.2.0.0/25' }, 'ip-range', /not inside subnet/],
    [{ networkId: id('n'), subnet: '10.1.0.0/24', auxAddresses: { r: '10.3.0.1' } }, 'aux-address', /outside subnet/],
    [{ networkId: id('n'), subnet: '10.1.0.0/24', auxAddresses: { r: '10.1.0.1' } }, 'aux-address', /gateway/],
  ];
  for (const [req, field, re] of cases) {
    const e = await fails(ipam.requestPool(req));
    t.equal(e.code, 'INVALID_CONFIG', `${field}: code`);
    t.equal(e.details['field'], field, `${field}: details.field`);
    t.match(e.message, re);
  }
  for (const [req, field] of [
    [{ networkId: id('n'), owner: 'o', ip: '10.1.0' }, 'ip'],
    [{ networkId: id('n'), owner: '' }, 'owner'],
    [{ networkId: id('n'), owner: 'a\nb' }, 'owner'],
    [{ networkId: id('n'), owner: 'o', ip: '10.1.0.5', family: 6 }, 'ip'],
  ] as const) {
    const e = await fails(ipam.requestAddress(req));
    t.equal(e.code, 'INVALID_CONFIG');
    t.equal(e.details['field'], field);
  }
  const e = await fails(ipam.releaseAddress({ networkId: id('n'), addr: 'x' }));
  t.equal(e.details['field'], 'ip');
  t.same(store.calls, [], 'no store method was called');
});

t.test('static addresses: inside the subnet, outside the ip-range allowed, in use → ALREADY_EXISTS naming the owner', async (t) => {
  const store = instrument(createMemoryIpamStore());
  const { ipam } = setup({ store });
  await ipam.requestPool({
    networkId: id('web'),
    subnet: '10.1.0.0/24',
    ipRange: '10.1.0.128/25',
    auxAddresses: { router: '10.1.0.3' },
  });
  const a = await ipam.requestAddress({ networkId: id('web'), owner: 'ctr-a', ip: '10.1.0.10' });
  t.equal(a.address, '10.1.0.10/24', 'outside the ip-range is fine');
  t.same(await ipam.requestAddress({ networkId: id('web'), owner: 'ctr-a', ip: '10.1.0.10' }), a, 'same owner again: idempotent');
  const taken = await fails(ipam.requestAddress({ networkId: id('web'), owner: 'ctr-b', ip: '10.1.0.10' }));
  t.equal(taken.code, 'ALREADY_EXISTS');
  t.equal(taken.message, 'address 10.1.0.10 on network "web" is in use by ctr-a; choose another --ip or free that address');
  t.equal(taken.details['owner'], 'ctr-a');
  const gw = await fails(ipam.requestAddress({ networkId: id('web'), owner: 'ctr-b', ip: '10.1.0.1' }));
  t.equal(gw.code, 'ALREADY_EXISTS');
  t.match(gw.message, /in use by the gateway/);
  const aux = await fails(ipam.requestAddress({ networkId: id('web'), owner: 'ctr-b', ip: '10.1.0.3' }));
  t.match(aux.message, /in use by aux-address router/);
  store.calls.length = 0;
  for (const [ip, re] of [
    ['10.2.0.5', /ip 10\.2\.0\.5 is outside subnet 10\.1\.0\.0\/24 of network "web"/],
    ['10.1.0.0', /network address/],
    ['10.1.0.255', /broadcast address/],
  ] as const) {
    const e = await fails(ipam.requestAddress({ networkId: id('web'), owner: 'ctr-b', ip }));
    t.equal(e.code, 'INVALID_CONFIG');
    t.equal(e.details['field'], 'ip');
    t.match(e.message, re);
  }
  t.notOk(store.calls.some((c) => MUTATIONS.includes(c)), 'rejected requests changed nothing');
  const none6 = await fails(ipam.requestAddress({ networkId: id('web'), owner: 'ctr-b', ip: 'fd00::5' }));
  t.equal(none6.code, 'NOT_FOUND');
  t.match(none6.message, /no IPv6 address pool/);
  const dyn = await ipam.requestAddress({ networkId: id('web'), owner: 'ctr-c' });
  t.equal(dyn.ip, '10.1.0.128', 'dynamic addresses come from the ip-range; static ones did not move the cursor');
  t.equal((await fails(ipam.requestAddress({ networkId: id('nope'), owner: 'x' }))).code, 'NOT_FOUND');
});

t.test('round robin: released addresses are reused last, search wraps around', async (t) => {
  const { ipam } = setup();
  await ipam.requestPool({ networkId: id('n'), subnet: '10.1.0.0/29' }); // hosts .1-.6, gateway .1
  const got: string[] = [];
  for (let i = 0; i < 3; i++) got.push((await ipam.requestAddress({ networkId: id('n'), owner: `c${i}` })).ip);
  t.same(got, ['10.1.0.2', '10.1.0.3', '10.1.0.4']);
  t.equal(await ipam.releaseAddress({ networkId: id('n'), addr: '10.1.0.3' }), true);
  t.equal((await ipam.requestAddress({ networkId: id('n'), owner: 'c3' })).ip, '10.1.0.5', 'not the just-released .3');
  t.equal((await ipam.requestAddress({ networkId: id('n'), owner: 'c4' })).ip, '10.1.0.6');
  t.equal((await ipam.requestAddress({ networkId: id('n'), owner: 'c5' })).ip, '10.1.0.3', 'wrapped around to the only free one');
  await ipam.releaseAddress({ networkId: id('n'), addr: '10.1.0.2' });
  await ipam.releaseAddress({ networkId: id('n'), addr: '10.1.0.4' });
  t.equal((await ipam.requestAddress({ networkId: id('n'), owner: 'c6' })).ip, '10.1.0.4', 'after the cursor (.3) comes .4, not .2');
  t.equal((await ipam.requestAddress({ networkId: id('n'), owner: 'c7' })).ip, '10.1.0.2');
});

t.test('dynamic allocation: cursor read + one reserve + cursor write; the pool is listed only when needed', async (t) => {
  const store = instrument(createMemoryIpamStore());
  const { ipam } = setup({ store });
  await ipam.requestPool({ networkId: id('n'), subnet: '10.8.0.0/16' });
  for (let i = 0; i < 500; i++) await ipam.requestAddress({ networkId: id('n'), owner: `c${i}` });
  store.calls.length = 0;
  const a = await ipam.requestAddress({ networkId: id('n'), owner: 'x' });
  t.equal(a.ip, '10.8.1.246', 'the 501st host address after the gateway');
  t.same(store.calls, ['getPool', 'getCursor', 'reserve', 'setCursor'], 'no listing of 500 reservations');
  const b = await ipam.requestAddress({ networkId: id('n'), owner: 'x' });
  t.not(b.ip, a.ip, 'each dynamic request reserves a new address');
  t.equal((await ipam.releaseOwner('x')).length, 2, 'releaseOwner frees both');
  // 20 static addresses right after the cursor: the fast path gives up after 8 and lists the pool once
  for (let i = 0; i < 20; i++) await ipam.requestAddress({ networkId: id('n'), owner: `s${i}`, ip: offsetAddr(parseIpAddr('10.8.1.248'), BigInt(i)) });
  store.calls.length = 0;
  const c = await ipam.requestAddress({ networkId: id('n'), owner: 'y' });
  t.equal(store.calls.filter((m) => m === 'listReserved').length, 1, 'one listing');
  t.equal(store.calls.filter((m) => m === 'reserve').length, 9, '8 fast tries, then straight to the free address');
  t.equal(c.ip, '10.8.2.12');
});

t.test('exhaustion on a /29 names the subnet and its size', async (t) => {
  const { ipam, store } = setup();
  await ipam.requestPool({ networkId: id('small'), networkName: 'small', subnet: '10.1.0.0/29' });
  const ips: string[] = [];
  for (let i = 0; i < 5; i++) ips.push((await ipam.requestAddress({ networkId: id('small'), owner: `c${i}` })).ip);
  t.same(ips, ['10.1.0.2', '10.1.0.3', '10.1.0.4', '10.1.0.5', '10.1.0.6'], 'never the network, broadcast or gateway address');
  const e = await fails(ipam.requestAddress({ networkId: id('small'), owner: 'c5' }));
  t.equal(e.code, 'EXHAUSTED');
  t.equal(
    e.message,
    'no free address in subnet 10.1.0.0/29 of network "small": all 5 addresses that can be handed out are in use ' +
      '(8 addresses in the subnet; the network address, the broadcast address, the gateway are never handed out); ' +
      'release addresses or recreate the network with a larger --subnet',
  );
  t.same(e.details, { networkId: 'small', subnet: '10.1.0.0/29', capacity: '5' });
  t.equal((await store.listReserved(poolIdFor(id('small'), 4))).length, 5, 'the failed request reserved nothing');
  await ipam.releaseAddress({ networkId: id('small'), addr: '10.1.0.4' });
  t.equal((await ipam.requestAddress({ networkId: id('small'), owner: 'c5' })).ip, '10.1.0.4', 'after a release the address is handed out again');
});

t.test('exhaustion of an ip-range; gateway and aux addresses are never handed out', async (t) => {
  const { ipam } = setup();
  await ipam.requestPool({ networkId: id('r'), subnet: '10.1.0.0/24', ipRange: '10.1.0.128/30', auxAddresses: { sw: '10.1.0.129' } });
  const got: string[] = [];
  for (let i = 0; i < 3; i++) got.push((await ipam.requestAddress({ networkId: id('r'), owner: `c${i}` })).ip);
  t.same(got, ['10.1.0.128', '10.1.0.130', '10.1.0.131']);
  const e = await fails(ipam.requestAddress({ networkId: id('r'), owner: 'c3' }));
  t.equal(e.code, 'EXHAUSTED');
  t.match(e.message, /no free address in ip-range 10\.1\.0\.128\/30 of subnet 10\.1\.0\.0\/24 .* all 3 addresses .* \(4 addresses in the ip-range; .* the gateway and 1 aux address are never handed out\); .* larger --ip-range/);
  const { ipam: ipam2 } = setup();
  await ipam2.requestPool({ networkId: id('g'), subnet: '10.2.0.0/29', gateway: '10.2.0.6', auxAddresses: { a: '10.2.0.2' } });
  const got2: string[] = [];
  for (let i = 0; i < 4; i++) got2.push((await ipam2.requestAddress({ networkId: id('g'), owner: `c${i}` })).ip);
  t.same(got2, ['10.2.0.1', '10.2.0.3', '10.2.0.4', '10.2.0.5'], 'custom gateway .6 and aux .2 skipped');
  t.equal((await fails(ipam2.requestAddress({ networkId: id('g'), owner: 'c9' }))).code, 'EXHAUSTED');
});

t.test('release: idempotent, owner-checked, unknown networks are fine', async (t) => {
  const { ipam } = setup();
  await ipam.requestPool({ networkId: id('n') });
  const a = await ipam.requestAddress({ networkId: id('n'), owner: 'ep1' });
  t.equal(await ipam.releaseAddress({ networkId: id('n'), addr: a.ip, owner: 'someone-else' }), false, 'wrong owner: not released');
  t.equal((await ipam.listAddresses(id('n'))).length, 1);
  t.equal(await ipam.releaseAddress({ networkId: id('n'), addr: a.ip, owner: 'ep1' }), true);
  t.equal(await ipam.releaseAddress({ networkId: id('n'), addr: a.ip, owner: 'ep1' }), false, 'second release is a no-op');
  t.equal(await ipam.releaseAddress({ networkId: id('n'), addr: a.ip }), false);
  t.equal(await ipam.releaseAddress({ networkId: id('gone'), addr: '10.9.9.9' }), false, 'network without pools');
  t.same(await ipam.listAddresses(id('n')), []);
});

t.test('releaseOwner frees everything an owner holds, per network or everywhere; gc frees the unlisted', async (t) => {
  const { ipam } = setup();
  await ipam.requestPool({ networkId: id('n1') });
  await ipam.requestPool({ networkId: id('n1'), family: 6 });
  await ipam.requestPool({ networkId: id('n2') });
  await ipam.requestAddress({ networkId: id('n1'), owner: 'ctr' });
  await ipam.requestAddress({ networkId: id('n1'), owner: 'ctr', family: 6 });
  await ipam.requestAddress({ networkId: id('n2'), owner: 'ctr' });
  await ipam.requestAddress({ networkId: id('n2'), owner: 'other' });
  const scoped = await ipam.releaseOwner('ctr', { networkId: id('n2') });
  t.same(scoped.map((r) => [r.networkId, r.addr]), [['n2', '10.89.1.2']]);
  const all = await ipam.releaseOwner('ctr');
  t.same(all.map((r) => r.poolId).sort(), ['n1-ipv4', 'n1-ipv6']);
  t.same(await ipam.releaseOwner('ctr'), [], 'idempotent');
  t.same((await ipam.listAddresses(id('n2'))).map((a) => a.owner), ['other'], 'other owners untouched');
  await ipam.requestAddress({ networkId: id('n1'), owner: 'live' });
  await ipam.requestAddress({ networkId: id('n1'), owner: 'dead' });
  const freed = await ipam.gc({ keep: (o) => o === 'live' });
  t.same(freed.map((r) => r.owner).sort(), ['dead', 'other']);
  t.same((await ipam.listAddresses(id('n1'))).map((a) => a.owner), ['live']);
  t.same((await ipam.listAddresses(id('n2'))).map((a) => a.owner), []);
});

t.test('releasePool removes pools and their reservations; idempotent', async (t) => {
  const { ipam, store } = setup();
  await ipam.requestPool({ networkId: id('n') });
  await ipam.requestPool({ networkId: id('n'), family: 6 });
  await ipam.requestAddress({ networkId: id('n'), owner: 'a' });
  await ipam.releasePool(id('n'));
  await ipam.releasePool(id('n'));
  t.same(await ipam.listPools(), []);
  t.same(await store.listReserved(poolIdFor(id('n'), 4)), []);
  t.equal((await fails(ipam.requestAddress({ networkId: id('n'), owner: 'a' }))).code, 'NOT_FOUND');
  await ipam.requestPool({ networkId: id('n') });
  t.equal((await ipam.requestAddress({ networkId: id('n'), owner: 'b' })).ip, '10.89.0.2', 'a recreated pool starts fresh');
});

t.test('IPv6 /64: allocation does bounded work, wraps at the end of 2^64 addresses, counts capacity', async (t) => {
  const { ipam, store } = setup();
  const pool = await ipam.requestPool({ networkId: id('v6'), subnet: 'fd00:1:2:3::/64' });
  const start = performance.now();
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) seen.add((await ipam.requestAddress({ networkId: id('v6'), owner: `c${i}`, family: 6 })).ip);
  const ms = performance.now() - start;
  t.equal(seen.size, 1000);
  t.ok(seen.has('fd00:1:2:3::2') && seen.has('fd00:1:2:3::3e9'), 'sequential from ::2');
  t.ok(ms < 5000, `1000 allocations in a /64 took ${ms.toFixed(0)} ms`);
  t.comment(`1000 sequential /64 allocations: ${ms.toFixed(0)} ms (${(ms / 1000).toFixed(2)} ms each, memory store)`);
  await store.setCursor(pool.poolId, parseIpAddr('fd00:1:2:3:ffff:ffff:ffff:fffe'));
  t.equal((await ipam.requestAddress({ networkId: id('v6'), owner: 'last', family: 6 })).ip, 'fd00:1:2:3:ffff:ffff:ffff:ffff', 'the last address (no broadcast in IPv6)');
  t.equal((await ipam.requestAddress({ networkId: id('v6'), owner: 'wrapped', family: 6 })).ip, 'fd00:1:2:3::3ea', 'wraps to the start, skips the 1000 taken');
  await ipam.requestPool({ networkId: id('v6r'), subnet: 'fd00:9::/64', ipRange: 'fd00:9::/126' });
  for (let i = 0; i < 2; i++) await ipam.requestAddress({ networkId: id('v6r'), owner: `c${i}`, family: 6 });
  const e = await fails(ipam.requestAddress({ networkId: id('v6r'), owner: 'c3', family: 6 }));
  t.equal(e.code, 'EXHAUSTED');
  t.match(e.message, /all 2 addresses .* \(4 addresses in the ip-range; the network address, the gateway are never handed out\)/);
});

t.test('concurrency: 200 parallel requests get 200 distinct addresses', async (t) => {
  const store = createMemoryIpamStore();
  const { ipam } = setup({ store });
  await ipam.requestPool({ networkId: id('c'), subnet: '10.50.0.0/24' });
  const start = performance.now();
  const res = await Promise.all(Array.from({ length: 200 }, (_, i) => ipam.requestAddress({ networkId: id('c'), owner: `ctr-${i}` })));
  const ms = performance.now() - start;
  t.equal(new Set(res.map((r) => r.ip)).size, 200, '200 distinct addresses');
  const reserved = await store.listReserved(poolIdFor(id('c'), 4));
  t.equal(reserved.length, 200);
  t.same(new Set(reserved.map((r) => r.owner)).size, 200, 'every owner holds exactly one');
  for (const r of res) t.equal(reserved.find((x) => x.addr === r.ip)?.owner, r.owner, `${r.ip} is held by ${r.owner}`);
  t.notOk(res.some((r) => r.ip === '10.50.0.1'), 'gateway never handed out');
  t.comment(`200 concurrent allocations on one Ipam: ${ms.toFixed(0)} ms`);
});

t.test('concurrency: 10 "processes" (separate Ipam instances) share one store', async (t) => {
  const store = createMemoryIpamStore();
  const procs = Array.from({ length: 10 }, () => setup({ store }).ipam);
  await procs[0]!.requestPool({ networkId: id('c'), subnet: '10.60.0.0/24' });
  const res = await Promise.all(
    Array.from({ length: 250 }, (_, i) => procs[i % 10]!.requestAddress({ networkId: id('c'), owner: `ctr-${i}` }).catch((e: unknown) => e as TsnetError)),
  );
  const ok = res.filter((r): r is Exclude<typeof r, TsnetError> => !(r instanceof TsnetError));
  t.equal(ok.length, 250, '250 of 253 fit');
  t.equal(new Set(ok.map((r) => r.ip)).size, 250, 'all distinct');
  const more = await Promise.all(
    Array.from({ length: 10 }, (_, i) => procs[i]!.requestAddress({ networkId: id('c'), owner: `late-${i}` }).catch((e: unknown) => e as TsnetError)),
  );
  t.equal(more.filter((r) => !(r instanceof TsnetError)).length, 3, 'exactly the 3 remaining addresses are handed out');
  t.ok(more.filter((r) => r instanceof TsnetError).every((e) => (e as TsnetError).code === 'EXHAUSTED'), 'the rest get EXHAUSTED');
  t.equal((await store.listReserved(poolIdFor(id('c'), 4))).length, 253);
});

t.test('concurrency: parallel pool requests get distinct, non-overlapping subnets', async (t) => {
  const store = createMemoryIpamStore();
  const procs = Array.from({ length: 5 }, () => setup({ store }).ipam);
  const pools = await Promise.all(Array.from({ length: 30 }, (_, i) => procs[i % 5]!.requestPool({ networkId: id(`n${i}`) })));
  const subnets = pools.map((p) => p.subnet);
  t.equal(new Set(subnets).size, 30);
  t.same([...subnets].sort((a, b) => Number(a.split('.')[2]) - Number(b.split('.')[2])), Array.from({ length: 30 }, (_, i) => `10.89.${i}.0/24`));
});

t.test('failing store: reserve() fails → error with context, nothing reserved, cursor unchanged', async (t) => {
  const inner = createMemoryIpamStore();
  const { ipam: good } = setup({ store: inner });
  await good.requestPool({ networkId: id('n'), subnet: '10.1.0.0/24' });
  await good.requestAddress({ networkId: id('n'), owner: 'first' });
  const { ipam: bad } = setup({ store: instrument(inner, { reserve: { error: diskFull() } }) });
  const e = await fails(bad.requestAddress({ networkId: id('n'), owner: 'x' }));
  t.equal(e.code, 'UNAVAILABLE', 'the store code is kept');
  t.match(e.message, /^ipam: reserve 10\.1\.0\.3 in pool n-ipv4: write: no space left on device$/);
  t.same((await inner.listReserved(poolIdFor(id('n'), 4))).map((r) => r.addr), ['10.1.0.2']);
  t.equal(await inner.getCursor(poolIdFor(id('n'), 4)), '10.1.0.2', 'cursor not advanced');
  const plain = setup({ store: instrument(inner, { reserve: { error: new Error('EIO') } }) }).ipam;
  const e2 = await fails(plain.requestAddress({ networkId: id('n'), owner: 'x' }));
  t.ok(e2 instanceof TsnetError);
  t.equal(e2.code, 'INTERNAL', 'a raw error becomes INTERNAL');
  t.equal((await good.requestAddress({ networkId: id('n'), owner: 'x' })).ip, '10.1.0.3', 'the next request gets the address that failed');
});

t.test('failing store: setCursor() fails → the reservation is undone', async (t) => {
  const inner = createMemoryIpamStore();
  const { ipam: good } = setup({ store: inner });
  await good.requestPool({ networkId: id('n'), subnet: '10.1.0.0/24' });
  const { ipam: bad } = setup({ store: instrument(inner, { setCursor: { error: diskFull() } }) });
  const e = await fails(bad.requestAddress({ networkId: id('n'), owner: 'x' }));
  t.equal(e.code, 'UNAVAILABLE');
  t.match(e.message, /save cursor of pool n-ipv4 \(reservation of 10\.1\.0\.2 undone\)/);
  t.same(await inner.listReserved(poolIdFor(id('n'), 4)), [], 'no reservation left behind');
  t.equal(await inner.getCursor(poolIdFor(id('n'), 4)), undefined);
  // if the undo fails too, the error says so and the owner-tagged reservation is found by releaseOwner
  const { ipam: worse } = setup({ store: instrument(inner, { setCursor: { error: diskFull() }, release: { error: diskFull() } }) });
  const e2 = await fails(worse.requestAddress({ networkId: id('n'), owner: 'x' }));
  t.match(e2.message, /undoing the reservation of 10\.1\.0\.2 failed too .* gc will free it/);
  t.same(await good.releaseOwner('x'), [{ networkId: 'n', poolId: 'n-ipv4', addr: '10.1.0.2', owner: 'x' }]);
});

t.test('failing store: createPool() or hostRoutes() fails → no pool, next request unaffected', async (t) => {
  const inner = createMemoryIpamStore();
  const { ipam: bad } = setup({ store: instrument(inner, { createPool: { error: diskFull() } }) });
  const e = await fails(bad.requestPool({ networkId: id('n') }));
  t.equal(e.code, 'UNAVAILABLE');
  t.match(e.message, /^ipam: create pool n-ipv4 \(10\.89\.0\.0\/24\): /);
  t.same(await inner.listPools(), []);
  const store = instrument(inner);
  const ipam = createIpam({ store, ulaSeed: 's', hostRoutes: () => Promise.reject(new Error('netlink: permission denied')) });
  const e2 = await fails(ipam.requestPool({ networkId: id('n') }));
  t.match(e2.message, /^ipam: read host routes: netlink: permission denied/);
  t.same(store.calls, [], 'no store call when the routes cannot be read');
  const { ipam: good } = setup({ store: inner });
  t.equal((await good.requestPool({ networkId: id('n') })).subnet, '10.89.0.0/24');
  const lockFail = instrument(inner, { withPoolLock: { error: new Error('flock: EINTR') } });
  const e3 = await fails(setup({ store: lockFail }).ipam.releasePool(id('n')));
  t.match(e3.message, /^ipam: pool lock: flock: EINTR/);
  t.equal((await inner.listPools()).length, 1, 'pool still there');
});

t.test('failing store during releaseOwner/gc: the rest is still released, failures reported together', async (t) => {
  const inner = createMemoryIpamStore();
  const { ipam: good } = setup({ store: inner });
  await good.requestPool({ networkId: id('a') });
  await good.requestPool({ networkId: id('b') });
  await good.requestAddress({ networkId: id('a'), owner: 'ctr' });
  await good.requestAddress({ networkId: id('b'), owner: 'ctr' });
  const { ipam: bad } = setup({ store: instrument(inner, { release: { error: diskFull(), from: 2 } }) });
  const e = await fails(bad.releaseOwner('ctr'));
  t.equal(e.code, 'UNAVAILABLE');
  t.match(e.message, /release addresses of ctr: 1 step failed \(1 released\)/);
  t.ok(e.cause instanceof AggregateError);
  t.equal((e.details['released'] as unknown[]).length, 1);
  t.same((await good.releaseOwner('ctr')).length, 1, 'the failed one can be released later');
});
