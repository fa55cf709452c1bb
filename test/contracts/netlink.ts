/**
 * The Netlink (and Sysctl) contract: one suite, run against the fake (sys/netlink/fake.test.ts, no
 * root) and against the iproute2 adapter in throwaway namespaces (test/integration/netlink.priv.test.ts).
 * Whatever a caller may rely on is asserted here, so the fake cannot drift from the kernel.
 */
import type { Test } from 'tap';
import { TsnetError } from '../../core/errors.js';
import {
  parseIfName, parseIpAddr, parseMac, parsePrefix,
  type IfName, type IpAddr, type NetnsRef, type Prefix,
} from '../../core/net.js';
import type { Netlink, NetlinkFor, NetlinkOp, SysctlFor } from '../../sys/netlink/api.js';

export interface NetlinkEnv {
  readonly netlinkFor: NetlinkFor;
  readonly sysctlFor: SysctlFor;
  /** The namespace playing "host" (itself a throwaway namespace). */
  readonly hostNs: NetnsRef;
  /** A new namespace with loopback up. */
  newNetns(): Promise<NetnsRef>;
  /** Deletes a namespace (releasing any handle on it first). */
  removeNetns(ns: NetnsRef): Promise<void>;
}

export type WithNetlinkEnv = (fn: (env: NetlinkEnv) => Promise<void>) => Promise<void>;

const n = (s: string): IfName => parseIfName(s);
const p = (s: string): Prefix => parsePrefix(s);
const a = (s: string): IpAddr => parseIpAddr(s);
/** A value that skips the branded parse, as a careless JS caller could pass. */
const raw = <T>(s: unknown): T => s as T;

async function linkNames(nl: Netlink): Promise<string[]> {
  return (await nl.listLinks()).map((l) => l.name).sort();
}

/** Waits (bounded) until `check` holds; kernel namespace teardown is asynchronous. */
async function eventually(check: () => Promise<boolean>, ms = 3_000): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function netlinkContract(t: Test, withEnv: WithNetlinkEnv, opts: { readonly skip?: string | false } = {}): void {
  const skip = opts.skip ?? false;
  const test = (name: string, fn: (t: Test, env: NetlinkEnv) => Promise<void>): void => {
    t.test(name, { skip }, async (t) => {
      await withEnv((env) => fn(t, env));
    });
  };

  test('bridges: add, ensure (idempotent), lookup, up, remove (idempotent)', async (t, env) => {
    const nl = env.netlinkFor(env.hostNs);
    t.equal(nl, env.netlinkFor(env.hostNs), 'one handle per namespace');
    t.same(await nl.ns, env.hostNs);
    t.equal(await nl.getLink(n('tbr0')), undefined, 'missing link is undefined');
    await nl.ensureBridge(n('tbr0'), { mtu: 1400, mac: parseMac('02:00:00:00:aa:01') });
    await nl.ensureBridge(n('tbr0'));
    await t.rejects(nl.addBridge(n('tbr0')), { code: 'ALREADY_EXISTS' });
    const br = await nl.getLink(n('tbr0'));
    t.match(br, { name: 'tbr0', kind: 'bridge', up: false, mtu: 1400, mac: '02:00:00:00:aa:01', master: undefined });
    t.ok((br?.index ?? 0) > 1, 'has an ifindex');
    await nl.setLink(n('tbr0'), { up: true });
    t.equal((await nl.getLink(n('tbr0')))?.up, true);
    const lo = (await nl.listLinks()).find((l) => l.name === 'lo');
    t.match(lo, { name: 'lo', index: 1, kind: undefined, up: true }, 'loopback listed');
    await nl.addBridge(n('tbr1'));
    t.same(await linkNames(nl), ['lo', 'tbr0', 'tbr1']);
    await nl.removeLink(n('tbr0'));
    await nl.removeLink(n('tbr0'));
    t.same(await linkNames(nl), ['lo', 'tbr1'], 'remove is idempotent');
    await t.rejects(nl.removeLink(n('lo')), { code: 'INVALID_CONFIG' }, 'loopback cannot be deleted');
  });

  test('vxlan: device with its VNI, permanent neighbour and FDB entries (replace, list, remove idempotent)', async (t, env) => {
    const nl = env.netlinkFor(env.hostNs);
    await nl.addBridge(n('tvxbr0'));
    await nl.addVxlan({ name: n('tvx0'), vni: 4242, local: a('127.0.0.1'), mtu: 1450 });
    await t.rejects(nl.addVxlan({ name: n('tvx0'), vni: 4243, local: a('127.0.0.1') }), { code: 'ALREADY_EXISTS' }, 'name taken');
    await t.rejects(nl.addVxlan({ name: n('tvx1'), vni: 0, local: a('127.0.0.1') }), { code: 'INVALID_CONFIG' }, 'vni 0 refused');
    const vx = await nl.getLink(n('tvx0'));
    t.match(vx, { name: 'tvx0', kind: 'vxlan', vni: 4242, mtu: 1450, up: false });
    await nl.setLink(n('tvx0'), { master: n('tvxbr0'), up: true });
    t.equal((await nl.getLink(n('tvx0')))?.master, 'tvxbr0', 'a port of the bridge');
    const mac = parseMac('02:42:0a:00:00:05');
    const mac2 = parseMac('02:42:0a:00:00:06');
    await nl.ensureNeigh({ dev: n('tvx0'), ip: a('10.77.0.5'), mac });
    await nl.ensureNeigh({ dev: n('tvx0'), ip: a('10.77.0.5'), mac: mac2 });
    t.same(await nl.listNeighs(n('tvx0')), [{ dev: 'tvx0', ip: '10.77.0.5', mac: mac2 }], 'replaced, one entry');
    await nl.ensureFdb({ dev: n('tvx0'), mac, dst: a('192.0.2.7') });
    await nl.ensureFdb({ dev: n('tvx0'), mac, dst: a('192.0.2.8') });
    const [r1, r2] = await nl.batch([{ op: 'ensureFdb', dev: n('tvx0'), mac: mac2, dst: a('192.0.2.9') }, { op: 'ensureNeigh', dev: n('tvx0'), ip: a('10.77.0.6'), mac }]);
    t.ok(r1?.ok === true && r2?.ok === true, 'fdb and neighbour ops in one batch');
    const fdb = [...(await nl.listFdb(n('tvx0')))].sort((x, y) => x.mac.localeCompare(y.mac));
    t.same(fdb, [{ dev: 'tvx0', mac, dst: '192.0.2.8' }, { dev: 'tvx0', mac: mac2, dst: '192.0.2.9' }], 'replaced, one entry per MAC');
    await nl.removeFdb({ dev: n('tvx0'), mac, dst: a('192.0.2.8') });
    await nl.removeFdb({ dev: n('tvx0'), mac, dst: a('192.0.2.8') });
    await nl.removeNeigh(n('tvx0'), a('10.77.0.5'));
    await nl.removeNeigh(n('tvx0'), a('10.77.0.5'));
    t.same((await nl.listFdb(n('tvx0'))).map((e) => e.mac), [mac2], 'fdb remove is idempotent');
    t.same((await nl.listNeighs(n('tvx0'))).map((e) => e.ip), ['10.77.0.6'], 'neighbour remove is idempotent');
    await t.rejects(nl.ensureNeigh({ dev: n('tnovx'), ip: a('10.77.0.5'), mac }), { code: 'NOT_FOUND' });
    await t.rejects(nl.ensureFdb({ dev: n('tnovx'), mac, dst: a('192.0.2.8') }), { code: 'NOT_FOUND' });
    await t.rejects(nl.listNeighs(n('tnovx')), { code: 'NOT_FOUND' });
    await t.rejects(nl.listFdb(n('tnovx')), { code: 'NOT_FOUND' });
    await nl.removeFdb({ dev: n('tnovx'), mac, dst: a('192.0.2.8') });
    await nl.removeNeigh(n('tnovx'), a('10.77.0.5'));
    t.pass('removes on a missing device succeed');
    await nl.removeLink(n('tvx0'));
    t.equal(await nl.getLink(n('tvx0')), undefined);
  });

  test('veth: peer created directly in another namespace; one end deleted deletes both', async (t, env) => {
    const host = env.netlinkFor(env.hostNs);
    const ctrNs = await env.newNetns();
    const ctr = env.netlinkFor(ctrNs);
    await host.addVeth({ name: n('tvh0'), peer: n('eth0'), peerNetns: ctrNs, mtu: 1450, peerMac: parseMac('02:00:00:00:bb:02') });
    t.match(await host.getLink(n('tvh0')), { kind: 'veth', mtu: 1450, up: false });
    t.match(await ctr.getLink(n('eth0')), { kind: 'veth', mtu: 1450, mac: '02:00:00:00:bb:02', up: false });
    t.equal(await host.getLink(n('eth0')), undefined, 'the peer is not in the host namespace');
    await t.rejects(host.addVeth({ name: n('tvh0'), peer: n('eth1'), peerNetns: ctrNs }), { code: 'ALREADY_EXISTS' }, 'host name taken');
    await t.rejects(host.addVeth({ name: n('tvh1'), peer: n('eth0'), peerNetns: ctrNs }), { code: 'ALREADY_EXISTS' }, 'peer name taken in the target');
    t.equal(await host.getLink(n('tvh1')), undefined, 'nothing half-created');
    t.same(await linkNames(ctr), ['eth0', 'lo']);
    await t.rejects(
      host.addVeth({ name: n('tvh2'), peer: n('eth2'), peerNetns: { kind: 'path', path: '/run/tsnet-no-such-netns' } }),
      { code: 'NOT_FOUND' },
      'missing peer namespace',
    );
    t.equal(await host.getLink(n('tvh2')), undefined);
    // a veth with both ends in one namespace
    await host.addVeth({ name: n('tva'), peer: n('tvb') });
    t.match(await host.getLink(n('tvb')), { kind: 'veth' });
    await host.removeLink(n('tvb'));
    t.equal(await host.getLink(n('tva')), undefined, 'deleting one end deletes the other');
    await host.removeLink(n('tvh0'));
    t.same(await linkNames(ctr), ['lo'], 'the peer in the other namespace went with it');
  });

  test('aliases (owner tags): set on a veth when created and by setLink, read back; refused when unsafe', async (t, env) => {
    const nl = env.netlinkFor(env.hostNs);
    const ns = await env.newNetns();
    await nl.addVeth({ name: n('tal0'), peer: n('tal1'), peerNetns: ns, alias: 'tsnet:abc:def' });
    t.equal((await nl.getLink(n('tal0')))?.alias, 'tsnet:abc:def', 'alias of the end created here');
    t.equal((await env.netlinkFor(ns).getLink(n('tal1')))?.alias, undefined, 'the peer has none');
    await nl.addBridge(n('talbr'));
    t.equal((await nl.getLink(n('talbr')))?.alias, undefined);
    await nl.setLink(n('talbr'), { alias: 'tsnet:x:y:/var/lib/tsnet', up: true });
    t.equal((await nl.getLink(n('talbr')))?.alias, 'tsnet:x:y:/var/lib/tsnet');
    await t.rejects(nl.setLink(n('talbr'), { alias: raw('has space') }), { code: 'INVALID_CONFIG', details: { field: 'changes.alias' } });
    await t.rejects(nl.addVeth({ name: n('tal2'), peer: n('tal3'), alias: raw('a#b') }), { code: 'INVALID_CONFIG' });
    t.equal(await nl.getLink(n('tal2')), undefined, 'nothing made');
    await nl.removeLink(n('tal0'));
    await nl.removeLink(n('talbr'));
  });

  test('macvlan: created on a parent directly in another namespace, under its final name; the parent takes it when deleted', async (t, env) => {
    const nl = env.netlinkFor(env.hostNs);
    const ns = await env.newNetns();
    await nl.addVeth({ name: n('tmvp0'), peer: n('tmvp1') });
    await nl.setLink(n('tmvp0'), { up: true });
    await nl.addMacvlan({ name: n('eth0'), parent: n('tmvp0'), mode: 'bridge', netns: ns, mac: parseMac('02:00:00:00:bb:01'), mtu: 1400 });
    const inside = env.netlinkFor(ns);
    const m = await inside.getLink(n('eth0'));
    t.equal(m?.kind, 'macvlan');
    t.equal(m?.mac, '02:00:00:00:bb:01');
    t.equal(m?.mtu, 1400);
    t.equal(await nl.getLink(n('eth0')), undefined, 'not in the parent\'s namespace');
    await t.rejects(nl.addMacvlan({ name: n('eth0'), parent: n('tmvp0'), mode: 'bridge', netns: ns }), { code: 'ALREADY_EXISTS' });
    await t.rejects(nl.addMacvlan({ name: n('mv9'), parent: n('nope0'), mode: 'bridge' }), { code: 'NOT_FOUND' });
    await t.rejects(nl.addMacvlan({ name: n('mv9'), parent: n('tmvp0'), mode: raw('sideways') }), { code: 'INVALID_CONFIG', details: { field: 'mode' } });
    await nl.addMacvlan({ name: n('mvhere'), parent: n('tmvp0'), mode: 'private' });
    t.equal((await nl.getLink(n('mvhere')))?.parent, 'tmvp0', 'a macvlan in the parent\'s namespace names its parent');
    await nl.removeLink(n('tmvp0'));
    t.ok(await eventually(async () => (await inside.getLink(n('eth0'))) === undefined), 'deleting the parent deletes its macvlans');
    t.equal(await nl.getLink(n('mvhere')), undefined);
  });

  test('deleting a namespace deletes its veths and their peers', async (t, env) => {
    const host = env.netlinkFor(env.hostNs);
    const ctrNs = await env.newNetns();
    await host.addVeth({ name: n('tvh5'), peer: n('eth0'), peerNetns: ctrNs });
    await env.netlinkFor(ctrNs).setLink(n('eth0'), { up: true });
    await env.removeNetns(ctrNs);
    t.ok(await eventually(async () => (await host.getLink(n('tvh5'))) === undefined), 'host end is gone');
    const gone = env.netlinkFor(ctrNs);
    await gone.removeLink(n('eth0'));
    await gone.removeAddr(n('eth0'), p('10.9.0.2/24'));
    await gone.removeRoute({ dst: p('0.0.0.0/0'), via: a('10.9.0.1') });
    t.pass('removes in a deleted namespace succeed');
    await t.rejects(gone.setLink(n('eth0'), { up: true }), { code: 'NOT_FOUND' });
    await t.rejects(gone.getLink(n('eth0')), { code: 'NOT_FOUND' });
  });

  test('setLink: master/nomaster, mtu, mac, rename, up/down', async (t, env) => {
    const nl = env.netlinkFor(env.hostNs);
    await nl.ensureBridge(n('tbr0'));
    await nl.addVeth({ name: n('tv0'), peer: n('tv0p') });
    await nl.setLink(n('tv0'), { master: n('tbr0'), up: true, mtu: 1400, mac: parseMac('02:00:00:00:cc:03') });
    t.match(await nl.getLink(n('tv0')), { master: 'tbr0', up: true, mtu: 1400, mac: '02:00:00:00:cc:03', carrier: false });
    await nl.setLink(n('tv0p'), { up: true });
    t.ok(await eventually(async () => (await nl.getLink(n('tv0')))?.carrier === true), 'carrier once both ends are up');
    await nl.setLink(n('tv0'), { master: null });
    t.equal((await nl.getLink(n('tv0')))?.master, undefined, 'nomaster');
    await nl.setLink(n('tv0'), {});
    await nl.setLink(n('tv0'), { up: false });
    await nl.setLink(n('tv0'), { name: n('tv0renamed') });
    t.equal(await nl.getLink(n('tv0')), undefined);
    t.match(await nl.getLink(n('tv0renamed')), { kind: 'veth', up: false });
    await t.rejects(nl.setLink(n('tv0renamed'), { name: n('tv0p') }), { code: 'ALREADY_EXISTS' }, 'rename onto a taken name');
    await t.rejects(nl.setLink(n('nope0'), { up: true }), { code: 'NOT_FOUND' });
    await t.rejects(nl.setLink(n('tv0renamed'), { master: n('nope0') }), { code: 'NOT_FOUND' }, 'missing master');
    await nl.addBridge(n('tbr1'));
    await t.rejects(nl.setLink(n('tbr1'), { master: n('tbr0') }), { code: 'INVALID_CONFIG' }, 'a bridge cannot be a bridge port');
  });

  test('addresses: v4 and v6 (nodad), duplicates, ensure, remove (idempotent), link-local', async (t, env) => {
    const nl = env.netlinkFor(env.hostNs);
    await nl.addVeth({ name: n('ta0'), peer: n('ta1') });
    await nl.addAddr(n('ta0'), p('10.77.0.1/24'));
    await nl.addAddr(n('ta0'), p('fd00:77::1/64'), { nodad: true });
    await t.rejects(nl.addAddr(n('ta0'), p('10.77.0.1/24')), { code: 'ALREADY_EXISTS' });
    await t.rejects(nl.addAddr(n('ta0'), p('fd00:77::1/64'), { nodad: true }), { code: 'ALREADY_EXISTS' });
    await nl.ensureAddr(n('ta0'), p('10.77.0.1/24'));
    await nl.ensureAddr(n('ta0'), p('10.77.0.9/24'));
    await t.rejects(nl.addAddr(n('nope0'), p('10.77.0.1/24')), { code: 'NOT_FOUND' });
    const got = (await nl.listAddrs(n('ta0'))).map((x) => `${x.prefix} ${x.family} ${x.scope}`).sort();
    t.same(got, ['10.77.0.1/24 4 global', '10.77.0.9/24 4 global', 'fd00:77::1/64 6 global']);
    const all = await nl.listAddrs();
    t.ok(all.some((x) => x.dev === 'ta0' && x.prefix === '10.77.0.1/24'), 'listed among all addresses');
    t.ok(all.some((x) => x.dev === 'lo' && x.prefix === '127.0.0.1/8' && x.scope === 'host'), 'loopback address listed');
    await t.rejects(nl.listAddrs(n('nope0')), { code: 'NOT_FOUND' });
    await nl.removeAddr(n('ta0'), p('10.77.0.9/24'));
    await nl.removeAddr(n('ta0'), p('10.77.0.9/24'));
    await nl.removeAddr(n('ta0'), p('fd00:99::1/64'));
    await nl.removeAddr(n('nope0'), p('10.77.0.1/24'));
    t.same((await nl.listAddrs(n('ta0'))).map((x) => x.prefix).sort(), ['10.77.0.1/24', 'fd00:77::1/64'], 'remove is idempotent');
    // IPv6 link-local appears once the link has carrier
    await nl.batch([{ op: 'setLink', name: n('ta0'), changes: { up: true } }, { op: 'setLink', name: n('ta1'), changes: { up: true } }]);
    // (the kernel reacts to carrier asynchronously, through linkwatch)
    t.ok(await eventually(async () => (await nl.listAddrs(n('ta0'))).some((x) => x.scope === 'link' && x.family === 6 && /^fe80::.*\/64$/.test(x.prefix))), 'link-local address');
    // going down flushes IPv6 addresses, keeps IPv4 ones
    await nl.setLink(n('ta0'), { up: false });
    t.same((await nl.listAddrs(n('ta0'))).map((x) => x.prefix), ['10.77.0.1/24'], 'down: v6 flushed, v4 kept');
  });

  test('routes: default and specific, via and/or dev, metric, in a namespace', async (t, env) => {
    const host = env.netlinkFor(env.hostNs);
    const ctrNs = await env.newNetns();
    const ctr = env.netlinkFor(ctrNs);
    await host.addVeth({ name: n('tr0'), peer: n('eth0'), peerNetns: ctrNs });
    const r = await ctr.batch([
      { op: 'addAddr', dev: n('eth0'), prefix: p('10.78.0.2/24') },
      { op: 'addAddr', dev: n('eth0'), prefix: p('fd00:78::2/64'), nodad: true },
      { op: 'setLink', name: n('eth0'), changes: { up: true } },
      { op: 'addRoute', route: { dst: p('0.0.0.0/0'), via: a('10.78.0.1') } },
      { op: 'addRoute', route: { dst: p('::/0'), via: a('fd00:78::1') } },
      { op: 'addRoute', route: { dst: p('10.79.0.0/16'), dev: n('eth0'), metric: 50 } },
      { op: 'addRoute', route: { dst: p('10.80.0.0/16'), via: a('10.78.0.1'), dev: n('eth0'), metric: 10, src: a('10.78.0.2') } },
    ]);
    t.same(r.map((x) => x.ok), [true, true, true, true, true, true, true], JSON.stringify(r));
    const routes = await ctr.listRoutes();
    const has = (want: Record<string, unknown>): boolean => routes.some((x) => Object.entries(want).every(([k, v]) => (x as unknown as Record<string, unknown>)[k] === v));
    t.ok(has({ dst: '0.0.0.0/0', family: 4, via: '10.78.0.1', dev: 'eth0', metric: 0 }), 'v4 default route');
    t.ok(has({ dst: '::/0', family: 6, via: 'fd00:78::1', dev: 'eth0', metric: 1024 }), 'v6 default route (metric 1024)');
    t.ok(has({ dst: '10.79.0.0/16', dev: 'eth0', metric: 50, via: undefined, scope: 'link' }), 'dev route with metric');
    t.ok(has({ dst: '10.80.0.0/16', via: '10.78.0.1', metric: 10, src: '10.78.0.2' }), 'route with src');
    t.ok(has({ dst: '10.78.0.0/24', dev: 'eth0', proto: 'kernel', scope: 'link', src: '10.78.0.2' }), 'connected route');
    t.ok(has({ dst: 'fd00:78::/64', dev: 'eth0', proto: 'kernel', metric: 256 }), 'v6 prefix route');
    t.same((await ctr.listRoutes({ family: 6 })).every((x) => x.family === 6), true, 'family filter');
    t.ok((await ctr.listRoutes({ dev: n('eth0') })).length >= 5, 'dev filter');
    await t.rejects(ctr.listRoutes({ dev: n('nope0') }), { code: 'NOT_FOUND' });
    // duplicates, ensure, errors
    await t.rejects(ctr.addRoute({ dst: p('0.0.0.0/0'), via: a('10.78.0.1') }), { code: 'ALREADY_EXISTS' });
    await t.rejects(ctr.addRoute({ dst: p('0.0.0.0/0'), via: a('10.78.0.3') }), { code: 'ALREADY_EXISTS' }, 'same dst and metric');
    await ctr.ensureRoute({ dst: p('0.0.0.0/0'), via: a('10.78.0.3') });
    t.ok((await ctr.listRoutes()).some((x) => x.dst === '0.0.0.0/0' && x.via === '10.78.0.3'), 'ensure replaced the gateway');
    t.equal((await ctr.listRoutes()).filter((x) => x.dst === '0.0.0.0/0').length, 1, 'still one default route');
    await ctr.ensureRoute({ dst: p('0.0.0.0/0'), via: a('10.78.0.3') });
    await t.rejects(ctr.addRoute({ dst: p('10.81.0.0/16'), via: a('192.0.2.1') }), { code: 'INVALID_CONFIG' }, 'gateway not on a connected network');
    await t.rejects(ctr.addRoute({ dst: p('10.81.0.0/16'), dev: n('nope0') }), { code: 'NOT_FOUND' });
    await ctr.removeRoute({ dst: p('10.79.0.0/16'), dev: n('eth0'), metric: 50 });
    await ctr.removeRoute({ dst: p('10.79.0.0/16'), dev: n('eth0'), metric: 50 });
    await ctr.removeRoute({ dst: p('10.99.0.0/16'), dev: n('nope0') });
    await ctr.removeRoute({ dst: p('fd00:99::/64') });
    t.notOk((await ctr.listRoutes()).some((x) => x.dst === '10.79.0.0/16'), 'removed, idempotently');
    // a route needs its device up; going down drops its routes
    await ctr.setLink(n('eth0'), { up: false });
    await t.rejects(ctr.addRoute({ dst: p('10.82.0.0/16'), dev: n('eth0') }), { code: 'INVALID_CONFIG' }, 'device down');
    t.same((await ctr.listRoutes()).filter((x) => x.dev === 'eth0'), [], 'routes through a down link are gone');
    t.same((await host.listRoutes({ dev: n('tr0') })).filter((x) => x.family === 4), [], 'host side has no v4 routes');
  });

  test('invalid input is refused before anything is applied, naming the field', async (t, env) => {
    const nl = env.netlinkFor(env.hostNs);
    const before = await linkNames(nl);
    const cases: [string, () => Promise<unknown>, string][] = [
      ['16 bytes', () => nl.addBridge(raw('a23456789012345b')), 'name'],
      ['slash', () => nl.addBridge(raw('a/b')), 'name'],
      ['space', () => nl.ensureBridge(raw('a b')), 'name'],
      ['newline', () => nl.addVeth({ name: raw('x\nlink del lo'), peer: n('p0') }), 'name'],
      ['peer', () => nl.addVeth({ name: n('tv9'), peer: raw('') }), 'peer'],
      ['cidr', () => nl.addAddr(n('lo'), raw('10.0.0.1/33')), 'prefix'],
      ['cidr2', () => nl.addAddr(n('lo'), raw('10.0.0/24')), 'prefix'],
      ['no cidr', () => nl.addAddr(n('lo'), raw('10.0.0.1')), 'prefix'],
      ['host bits', () => nl.addRoute({ dst: raw('10.1.2.3/24'), dev: n('lo') }), 'route.dst'],
      ['family', () => nl.addRoute({ dst: p('10.1.2.0/24'), via: a('fd00::1') }), 'route.via'],
      ['no via/dev', () => nl.addRoute({ dst: p('10.1.2.0/24') }), 'route'],
      ['metric', () => nl.addRoute({ dst: p('10.1.2.0/24'), dev: n('lo'), metric: -1 }), 'route.metric'],
      ['mtu', () => nl.setLink(n('lo'), { mtu: 70_000 }), 'changes.mtu'],
      ['mac', () => nl.setLink(n('lo'), { mac: raw('01:00:00:00:00:01') }), 'changes.mac'],
      ['master', () => nl.setLink(n('lo'), { master: raw('x y') }), 'changes.master'],
      ['netns path', () => nl.addVeth({ name: n('tv9'), peer: n('p9'), peerNetns: { kind: 'path', path: '/run/a b' } }), 'peerNetns'],
      ['lookup', () => nl.getLink(raw('a b')), 'name'],
    ];
    for (const [what, fn, field] of cases) {
      const err = await fn().then(() => undefined, (e: unknown) => e);
      t.ok(err instanceof TsnetError, `${what}: TsnetError`);
      t.equal((err as TsnetError | undefined)?.code, 'INVALID_CONFIG', `${what}: INVALID_CONFIG`);
      t.equal((err as TsnetError | undefined)?.details['field'], field, `${what}: names the field`);
    }
    // a batch with one malformed op applies nothing
    const ops: NetlinkOp[] = [
      { op: 'addBridge', name: n('tgood0') },
      { op: 'addBridge', name: raw('bad name') },
    ];
    await t.rejects(nl.batch(ops), { code: 'INVALID_CONFIG', details: { field: 'ops[1].name' } });
    t.same(await linkNames(nl), before, 'nothing created');
  });

  test('batch: one round trip, per-op results in order, failures do not stop later ops', async (t, env) => {
    const nl = env.netlinkFor(env.hostNs);
    const res = await nl.batch([
      { op: 'addBridge', name: n('tb0') },
      { op: 'addBridge', name: n('tb0') },
      { op: 'setLink', name: n('nope0'), changes: { up: true } },
      { op: 'removeLink', name: n('nope0') },
      { op: 'setLink', name: n('tb0'), changes: { up: true } },
      { op: 'addAddr', dev: n('tb0'), prefix: p('10.83.0.1/24') },
      { op: 'addAddr', dev: n('tb0'), prefix: p('10.83.0.1/24') },
    ]);
    t.same(res.map((r) => (r.ok ? 'ok' : r.error.code)), ['ok', 'ALREADY_EXISTS', 'NOT_FOUND', 'ok', 'ok', 'ok', 'ALREADY_EXISTS']);
    const failed = res[1];
    t.ok(failed && !failed.ok && failed.error instanceof TsnetError && /tb0/.test(failed.error.message), 'error names the op');
    t.match(await nl.getLink(n('tb0')), { up: true });
    t.same(await nl.batch([]), []);
  });

  test('concurrency: many callers in flight on one handle, every result is their own', async (t, env) => {
    const nl = env.netlinkFor(env.hostNs);
    await nl.addVeth({ name: n('tc0'), peer: n('tc1') });
    const N = 120;
    const want: string[] = [];
    const immediate: string[] = []; // added without a delay: a second add issued now must come after
    const jobs: Promise<string>[] = [];
    for (let i = 0; i < N; i++) {
      const prefix = p(`10.84.${i % 100}.${1 + Math.floor(i / 100)}/32`);
      const job = async (): Promise<string> => {
        if (i % 7 === 3) await new Promise((r) => setImmediate(r)); // spread over several writes
        if (i % 10 === 9) {
          const links = await nl.listLinks();
          return links.some((l) => l.name === 'tc0') ? 'read-ok' : 'read-bad';
        }
        if (i % 10 === 5) return nl.setLink(n(`nope${i}`), { up: true }).then(() => 'bad', (e: TsnetError) => e.code);
        return nl.addAddr(n('tc0'), prefix).then(() => 'ok', (e: TsnetError) => e.code);
      };
      if (i % 10 !== 9 && i % 10 !== 5) {
        want.push(`10.84.${i % 100}.${1 + Math.floor(i / 100)}/32`);
        if (i % 7 !== 3) immediate.push(`10.84.${i % 100}.${1 + Math.floor(i / 100)}/32`);
      }
      jobs.push(job());
    }
    // the same addresses again, concurrently: all must be ALREADY_EXISTS
    const again = immediate.slice(0, 20).map((x) => nl.addAddr(n('tc0'), p(x)).then(() => 'ok', (e: TsnetError) => e.code));
    const results = await Promise.all(jobs);
    const expected = results.map((_, i) => (i % 10 === 9 ? 'read-ok' : i % 10 === 5 ? 'NOT_FOUND' : 'ok'));
    t.same(results, expected, 'each caller got its own outcome');
    t.same(await Promise.all(again), immediate.slice(0, 20).map(() => 'ALREADY_EXISTS'), 'ops on one handle run in call order');
    const have = (await nl.listAddrs(n('tc0'))).map((x) => x.prefix).filter((x) => x.startsWith('10.84.')).sort();
    t.same(have, [...want].sort(), 'the kernel holds exactly what was added');
  });

  test('a closed handle refuses work; the factory then hands out a new one', async (t, env) => {
    const nsRef = await env.newNetns();
    const h = env.netlinkFor(nsRef);
    t.match(await h.getLink(n('lo')), { name: 'lo' });
    await h.close();
    await t.rejects(h.getLink(n('lo')), { code: 'UNAVAILABLE' });
    await t.rejects(h.addBridge(n('tx0')), { code: 'UNAVAILABLE' });
    await t.rejects(h.batch([{ op: 'removeLink', name: n('tx0') }]), { code: 'UNAVAILABLE' });
    const h2 = env.netlinkFor(nsRef);
    t.not(h2, h, 'a new handle');
    t.match(await h2.getLink(n('lo')), { name: 'lo' });
  });

  test('sysctl: get/set in a namespace, per-interface keys, missing keys', async (t, env) => {
    const nsRef = await env.newNetns();
    const nl = env.netlinkFor(nsRef);
    const sc = env.sysctlFor(nsRef);
    await nl.addBridge(n('tsb0'));
    const hostForward = await env.sysctlFor(env.hostNs).get('net.ipv4.ip_forward');
    await sc.set({ 'net.ipv4.ip_forward': hostForward === '1' ? 0 : 1 });
    t.equal(await sc.get('net.ipv4.ip_forward'), hostForward === '1' ? '0' : '1');
    await sc.set({ 'net.ipv4.ip_forward': 1, 'net.ipv4.conf.tsb0.route_localnet': '1', 'net.ipv6.conf.tsb0.disable_ipv6': 1 });
    t.equal(await sc.get('net.ipv4.ip_forward'), '1');
    t.equal(await sc.get('net.ipv4.conf.tsb0.route_localnet'), '1');
    await t.rejects(nl.addAddr(n('tsb0'), p('fd00:85::1/64'), { nodad: true }), { code: 'INVALID_CONFIG' }, 'IPv6 disabled on the link');
    await t.rejects(sc.get('net.ipv4.conf.nope0.forwarding'), { code: 'NOT_FOUND' });
    await t.rejects(sc.set({ 'net.ipv4.conf.nope0.forwarding': 1, 'net.ipv4.conf.tsb0.forwarding': 1 }), { code: 'NOT_FOUND' });
    t.equal(await sc.get('net.ipv4.conf.tsb0.forwarding'), '1', 'the other keys were still set');
    await t.rejects(sc.set({ 'net.ipv4.ip_forward': 'abc' }), { code: 'INVALID_CONFIG' });
    await t.rejects(sc.set({ 'net..ipv4': 1 }), { code: 'INVALID_CONFIG' });
    await t.rejects(sc.get('net.ipv4.conf.//.x'), { code: 'INVALID_CONFIG' }, 'no path traversal');
    await sc.set({ 'net.ipv4.ip_forward': hostForward === '1' ? 0 : 1 });
    t.equal(await env.sysctlFor(env.hostNs).get('net.ipv4.ip_forward'), hostForward, 'namespaces are separate');
  });
}
