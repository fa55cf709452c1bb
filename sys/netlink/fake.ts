/**
 * An in-memory kernel for tests of netlink's callers: namespaces with links (loopback, bridges,
 * veth pairs whose ends may live in different namespaces), addresses, main-table routes and the
 * net.* sysctls, with the semantics and error codes of the real adapter (test/contracts/netlink.ts
 * runs the same suite against both). It also emulates the kernel's side effects that callers see:
 * connected/prefix routes of addresses on up links, IPv6 link-local addresses once a link has
 * carrier, IPv6 addresses and routes dropped when a link goes down, deleting a veth end deletes
 * the other, deleting a namespace deletes its links.
 *
 * Not emulated: the local table, kernel routes being individually deletable, a bridge taking its
 * ports' MAC or MTU, DAD states, multipath routes.
 *
 * Failure injection for callers' error paths: `failNext('addVeth', new TsnetError(...))`.
 */
import { TsnetError } from '../../core/errors.js';
import {
  addrFamily, makePrefix, netnsLabel, parseIpAddr, prefixAddr, prefixContains, prefixLen, prefixNetwork,
  type Family, type IfName, type IpAddr, type MacAddr, type NetnsRef, type Prefix,
} from '../../core/net.js';
import type {
  Addr, BatchResult, Link, LinkChanges, Netlink, NetlinkCache, NetlinkOp, NetlinkOpName, Route, RouteSpec,
  Sysctl, SysctlFor,
} from './api.js';
import { checkIfName, describeOp, isRemove, validateOp, validateOps } from './ops.js';
import { parseSysctlKey, parseSysctlValue } from '../sysctl.js';

export type FakeOpName = NetlinkOpName | 'getLink' | 'listLinks' | 'listAddrs' | 'listRoutes' | 'listNeighs' | 'listFdb' | 'sysctlGet' | 'sysctlSet';

export interface FakeCall {
  readonly ns: string;
  readonly op: FakeOpName;
  readonly args: unknown;
}

export interface FakeNetlink {
  /** Handles, one per namespace, like createIproute2NetlinkFor. */
  readonly netlinkFor: NetlinkCache;
  readonly sysctlFor: SysctlFor;
  /** Creates a namespace with loopback up (like IsolatedHost.newNetns); a fresh path if none given. */
  addNetns(path?: string): NetnsRef;
  /** Deletes a namespace like the kernel does when its last reference goes: its links go, and so do
   *  the peers of its veths, wherever they are. Handles on it then fail with NOT_FOUND. */
  removeNetns(ns: NetnsRef): void;
  hasNetns(ns: NetnsRef): boolean;
  /** Is this bridge port isolated (`bridge_slave isolated on`)? False for a missing link. */
  isolatedPort(ns: NetnsRef, name: string): boolean;
  /** The next call of `op` (in `ns`, if given) fails with `error`, without any effect. */
  failNext(op: FakeOpName, error: TsnetError, opts?: { readonly ns?: NetnsRef }): void;
  /** Every call made through the handles, in order (including failed ones). */
  readonly calls: readonly FakeCall[];
  clearCalls(): void;
}

type Kind = 'loopback' | 'bridge' | 'veth' | 'macvlan' | 'vxlan';

interface FLink {
  readonly id: number;
  readonly ns: FNs;
  readonly kind: Kind;
  readonly index: number;
  name: string;
  up: boolean;
  mtu: number;
  mac: string;
  master: FLink | undefined;
  /** Bridge port isolation (not reported by `Link`; tests read it through `isolatedPort`). */
  isolated: boolean;
  peer: FLink | undefined;
  /** The IPv6 link-local address, once assigned (up with carrier). */
  linkLocal: IpAddr | undefined;
  /** Per-device sysctls that were set ("ipv4.forwarding" → "1"). */
  readonly conf: Map<string, string>;
  alias: string | undefined;
  /** A macvlan's lower link (possibly in another namespace). */
  lower: FLink | undefined;
  /** A VXLAN device's VNI, permanent neighbour entries (ip → mac) and FDB entries (mac → dst). */
  vni: number | undefined;
  readonly neighs: Map<string, MacAddr>;
  readonly fdb: Map<string, IpAddr>;
}

interface FAddr {
  readonly link: FLink;
  readonly prefix: Prefix;
  readonly family: Family;
}

interface FRoute {
  readonly dst: Prefix;
  readonly family: Family;
  readonly via: IpAddr | undefined;
  readonly link: FLink;
  readonly metric: number;
  readonly src: IpAddr | undefined;
}

interface FNs {
  readonly ref: NetnsRef;
  readonly label: string;
  links: FLink[];
  addrs: FAddr[];
  routes: FRoute[];
  nextIndex: number;
  readonly sysctl: Map<string, string>;
}

const GLOBAL_SYSCTLS: Readonly<Record<string, string>> = {
  'net.ipv4.ip_forward': '0',
  'net.ipv4.ip_local_port_range': '32768\t60999',
  'net.ipv4.ping_group_range': '1\t0',
  'net.ipv4.ip_unprivileged_port_start': '1024',
};
const CONF_DEFAULTS: Readonly<Record<string, string>> = {
  'ipv4.forwarding': '0',
  'ipv4.route_localnet': '0',
  'ipv4.rp_filter': '0',
  'ipv4.proxy_arp': '0',
  'ipv4.accept_local': '0',
  'ipv4.send_redirects': '1',
  'ipv6.forwarding': '0',
  'ipv6.disable_ipv6': '0',
  'ipv6.accept_ra': '1',
  'ipv6.accept_dad': '1',
  'ipv6.autoconf': '1',
  'ipv6.addr_gen_mode': '0',
};

function err(code: TsnetError['code'], message: string, details: Record<string, unknown> = {}): TsnetError {
  return new TsnetError(code, message, { details });
}

/** fe80::/64 + EUI-64 of the MAC, as the kernel derives it (addr_gen_mode 0). */
function linkLocalOf(mac: string): IpAddr {
  const b = mac.split(':').map((h) => parseInt(h, 16));
  const w = (x: number, y: number): string => ((x << 8) | y).toString(16);
  const g = (i: number): number => b[i] ?? 0;
  return parseIpAddr(`fe80::${w(g(0) ^ 2, g(1))}:${w(g(2), 0xff)}:${w(0xfe, g(3))}:${w(g(4), g(5))}`);
}

export function createFakeNetlink(): FakeNetlink {
  const namespaces = new Map<string, FNs>();
  const calls: FakeCall[] = [];
  const failures: { op: FakeOpName; ns: string | undefined; error: TsnetError }[] = [];
  let nextId = 1;
  let nextNs = 1;

  const newLink = (ns: FNs, kind: Kind, name: string, mtu: number, mac: string | undefined): FLink => {
    const id = nextId++;
    const hex = (n: number): string => (n & 255).toString(16).padStart(2, '0');
    const link: FLink = {
      id, ns, kind, index: ns.nextIndex++, name, up: false, mtu,
      mac: mac ?? `0a:fa:${[id >> 24, id >> 16, id >> 8, id].map(hex).join(':')}`, // locally administered, unicast
      master: undefined, isolated: false, peer: undefined, linkLocal: undefined, conf: new Map(), alias: undefined, lower: undefined,
      vni: undefined, neighs: new Map(), fdb: new Map(),
    };
    ns.links.push(link);
    return link;
  };

  const addNs = (ref: NetnsRef): FNs => {
    const label = netnsLabel(ref);
    const ns: FNs = { ref, label, links: [], addrs: [], routes: [], nextIndex: 1, sysctl: new Map() };
    namespaces.set(label, ns);
    const lo = newLink(ns, 'loopback', 'lo', 65_536, '00:00:00:00:00:00');
    lo.up = true;
    return ns;
  };
  addNs({ kind: 'host' });

  // -- kernel behaviour ----------------------------------------------------------------------

  const portsOf = (br: FLink): FLink[] => br.ns.links.filter((l) => l.master === br);
  const carrier = (l: FLink, depth = 0): boolean => {
    if (!l.up) return false;
    switch (l.kind) {
      case 'loopback':
        return true;
      case 'veth':
        return l.peer?.up === true;
      case 'macvlan':
        return l.lower !== undefined && carrier(l.lower, depth + 1);
      case 'vxlan':
        return true;
      case 'bridge': {
        const ports = portsOf(l);
        return ports.length === 0 || (depth < 4 && ports.some((p) => carrier(p, depth + 1)));
      }
    }
  };
  const ipv6Disabled = (l: FLink): boolean => l.conf.get('ipv6.disable_ipv6') === '1';

  /** A link going down: its IPv6 addresses are flushed (keep_addr_on_down=0), every route through it goes. */
  const wentDown = (l: FLink): void => {
    l.linkLocal = undefined;
    l.ns.addrs = l.ns.addrs.filter((a) => a.link !== l || a.family === 4);
    l.ns.routes = l.ns.routes.filter((r) => r.link !== l);
  };

  /** Applies the kernel's state-driven reactions after every change, in every namespace. */
  const settle = (): void => {
    for (const ns of namespaces.values()) {
      for (const l of ns.links) {
        if (ipv6Disabled(l)) {
          l.linkLocal = undefined;
          ns.addrs = ns.addrs.filter((a) => a.link !== l || a.family === 4);
          ns.routes = ns.routes.filter((r) => r.link !== l || r.family === 4);
        } else if (l.up && l.kind !== 'loopback' && l.linkLocal === undefined && carrier(l)) {
          l.linkLocal = linkLocalOf(l.mac); // IPv6 link-local once the link has carrier
        }
      }
    }
  };

  const deleteLink = (l: FLink): void => {
    // A veth takes its peer; a link takes the macvlans on it (wherever they are).
    const uppers = [...namespaces.values()].flatMap((n) => n.links.filter((x) => x.lower === l));
    const gone = [l, ...(l.peer ? [l.peer] : []), ...uppers];
    for (const g of gone) {
      g.ns.links = g.ns.links.filter((x) => x !== g);
      g.ns.addrs = g.ns.addrs.filter((a) => a.link !== g);
      g.ns.routes = g.ns.routes.filter((r) => r.link !== g);
      for (const p of g.ns.links) if (p.master === g) p.master = undefined;
    }
    settle();
  };

  const addrsOf = (ns: FNs): Addr[] => {
    const out: Addr[] = [];
    for (const l of ns.links) {
      if (l.kind === 'loopback') {
        if (l.up) {
          out.push({ dev: l.name as IfName, prefix: '127.0.0.1/8' as Prefix, family: 4, scope: 'host' });
          out.push({ dev: l.name as IfName, prefix: '::1/128' as Prefix, family: 6, scope: 'host' });
        }
      }
      for (const a of ns.addrs) {
        if (a.link === l) out.push({ dev: l.name as IfName, prefix: a.prefix, family: a.family, scope: a.family === 6 && a.prefix.startsWith('fe80:') ? 'link' : 'global' });
      }
      if (l.linkLocal !== undefined) out.push({ dev: l.name as IfName, prefix: makePrefix(l.linkLocal, 64), family: 6, scope: 'link' });
    }
    return out;
  };

  /** Connected (IPv4) and prefix (IPv6) routes the kernel adds for addresses on up links. */
  const kernelRoutes = (ns: FNs): Route[] => {
    const out: Route[] = [];
    const seen = new Set<string>();
    const push = (r: Route): void => {
      const key = `${r.dst} ${String(r.dev)}`;
      if (seen.has(key)) return;
      seen.add(key);
      out.push(r);
    };
    for (const l of ns.links) {
      if (!l.up || l.kind === 'loopback') continue;
      for (const a of ns.addrs) {
        if (a.link !== l) continue;
        const len = prefixLen(a.prefix);
        if (a.family === 4 && len < 32) {
          push({ dst: prefixNetwork(a.prefix), family: 4, via: undefined, dev: l.name as IfName, metric: 0, proto: 'kernel', scope: 'link', src: prefixAddr(a.prefix) });
        }
        if (a.family === 6 && len < 128) {
          push({ dst: prefixNetwork(a.prefix), family: 6, via: undefined, dev: l.name as IfName, metric: 256, proto: 'kernel', scope: 'global', src: undefined });
        }
      }
      if (!ipv6Disabled(l)) push({ dst: 'fe80::/64' as Prefix, family: 6, via: undefined, dev: l.name as IfName, metric: 256, proto: 'kernel', scope: 'global', src: undefined });
    }
    return out;
  };

  const userRoute = (r: FRoute): Route => ({
    dst: r.dst, family: r.family, via: r.via, dev: r.link.name as IfName, metric: r.metric, proto: 'boot',
    scope: r.family === 4 && r.via === undefined ? 'link' : 'global', src: r.src,
  });

  const routesOf = (ns: FNs): Route[] => {
    const k = kernelRoutes(ns);
    return [...ns.routes.filter((r) => r.family === 4).map(userRoute), ...k.filter((r) => r.family === 4), ...ns.routes.filter((r) => r.family === 6).map(userRoute), ...k.filter((r) => r.family === 6)];
  };

  const toLink = (l: FLink): Link => ({
    name: l.name as IfName,
    index: l.index,
    kind: l.kind === 'loopback' ? undefined : l.kind,
    up: l.up,
    carrier: carrier(l),
    mtu: l.mtu,
    mac: l.mac as MacAddr,
    master: l.master?.name as IfName | undefined,
    ...(l.alias !== undefined ? { alias: l.alias } : {}),
    ...(l.lower !== undefined && l.lower.ns === l.ns ? { parent: l.lower.name as IfName } : {}),
    ...(l.vni !== undefined ? { vni: l.vni } : {}),
  });

  // -- operations ----------------------------------------------------------------------------

  const nsOf = (ref: NetnsRef, field = 'netns'): FNs => {
    const ns = namespaces.get(netnsLabel(ref));
    if (!ns) throw err('NOT_FOUND', `${field}: ${netnsLabel(ref)} does not exist`, { field, value: netnsLabel(ref) });
    return ns;
  };
  const find = (ns: FNs, name: string): FLink | undefined => ns.links.find((l) => l.name === name);
  const need = (ns: FNs, name: string, what: string): FLink => {
    const l = find(ns, name);
    if (!l) throw err('NOT_FOUND', `${what} (netns ${ns.label}): Cannot find device "${name}"`);
    return l;
  };

  /** Is `via` reachable on a connected prefix of an up link (that link, if `dev` is given)? */
  const gatewayLink = (ns: FNs, via: IpAddr, dev: FLink | undefined): FLink | undefined => {
    if (via.startsWith('fe80:')) return dev?.up === true ? dev : undefined;
    for (const a of ns.addrs) {
      if (!a.link.up || (dev !== undefined && a.link !== dev)) continue;
      if (addrFamily(a.prefix) === addrFamily(via) && prefixContains(prefixNetwork(a.prefix), via)) return a.link;
    }
    return undefined;
  };

  const effMetric = (r: RouteSpec): number => r.metric ?? (addrFamily(r.dst) === 6 ? 1024 : 0);

  const addRoute = (ns: FNs, r: RouteSpec, what: string, replace: boolean): void => {
    const family = addrFamily(r.dst);
    const dev = r.dev !== undefined ? need(ns, r.dev, what) : undefined;
    if (dev && !dev.up) throw err('INVALID_CONFIG', `${what} (netns ${ns.label}): Error: Device for nexthop is not up.`);
    let link = dev;
    if (r.via !== undefined) {
      if (family === 6 && r.via.startsWith('fe80:') && !dev) throw err('INVALID_CONFIG', `${what} (netns ${ns.label}): Error: Egress device not specified.`);
      link = gatewayLink(ns, r.via, dev);
      if (!link) throw err('INVALID_CONFIG', `${what} (netns ${ns.label}): Error: Nexthop has invalid gateway.`);
    }
    if (r.src !== undefined && !ns.addrs.some((a) => prefixAddr(a.prefix) === r.src)) {
      throw err('INVALID_CONFIG', `${what} (netns ${ns.label}): Error: Invalid prefsrc address.`);
    }
    const metric = effMetric(r);
    const same = (x: { dst: Prefix; metric: number; family: Family }): boolean => x.family === family && x.dst === r.dst && x.metric === metric;
    if (replace) {
      if (kernelRoutes(ns).some(same)) return;
      ns.routes = ns.routes.filter((x) => !same(x));
    } else if (ns.routes.some(same) || kernelRoutes(ns).some(same)) {
      throw err('ALREADY_EXISTS', `${what} (netns ${ns.label}): RTNETLINK answers: File exists`);
    }
    if (!link) throw err('INVALID_CONFIG', `${what} (netns ${ns.label}): a route needs a gateway or a device`);
    ns.routes.push({ dst: r.dst, family, via: r.via, link, metric, src: r.src });
  };

  const setLink = (ns: FNs, l: FLink, c: LinkChanges, what: string): void => {
    // Check everything first, then apply: the kernel request either works or fails as a whole here.
    if (c.name !== undefined && c.name !== l.name && find(ns, c.name)) throw err('ALREADY_EXISTS', `${what} (netns ${ns.label}): RTNETLINK answers: File exists`);
    let master: FLink | null | undefined;
    if (c.master === null) master = null;
    else if (c.master !== undefined) {
      master = need(ns, c.master, what);
      if (l.kind === 'bridge' && master.kind === 'bridge') throw err('INVALID_CONFIG', `${what} (netns ${ns.label}): Error: Can not enslave a bridge to a bridge.`);
      if (master === l || master.kind !== 'bridge' || l.kind === 'loopback') throw err('INVALID_CONFIG', `${what} (netns ${ns.label}): RTNETLINK answers: Operation not supported`);
    }
    const willHaveMaster = master === undefined ? l.master !== undefined : master !== null;
    if ((c.isolated !== undefined || c.hairpin !== undefined) && !willHaveMaster) throw err('INVALID_CONFIG', `${what} (netns ${ns.label}): RTNETLINK answers: Operation not supported`);
    if (c.mac !== undefined) l.mac = c.mac;
    if (c.mtu !== undefined) l.mtu = c.mtu;
    if (c.isolated !== undefined) l.isolated = c.isolated;
    if (c.alias !== undefined) l.alias = c.alias;
    if (c.name !== undefined) l.name = c.name;
    if (master !== undefined) l.master = master ?? undefined;
    if (master === null) l.isolated = false;
    if (c.up !== undefined) {
      const wasUp = l.up;
      l.up = c.up;
      if (wasUp && !c.up) wentDown(l);
    }
    settle();
  };

  const apply = (ns: FNs, op: NetlinkOp): void => {
    const what = describeOp(op);
    switch (op.op) {
      case 'addBridge':
      case 'ensureBridge': {
        const existing = find(ns, op.name);
        if (existing) {
          if (op.op === 'ensureBridge' && existing.kind === 'bridge') return;
          throw err('ALREADY_EXISTS', `${what} (netns ${ns.label}): ${op.op === 'ensureBridge' ? `${op.name} exists and is not a bridge` : 'RTNETLINK answers: File exists'}`);
        }
        newLink(ns, 'bridge', op.name, op.mtu ?? 1500, op.mac);
        return;
      }
      case 'addVeth': {
        const peerNs = op.peerNetns === undefined ? ns : nsOf(op.peerNetns, 'peerNetns');
        if (find(ns, op.name) || find(peerNs, op.peer) || (peerNs === ns && op.name === op.peer)) {
          throw err('ALREADY_EXISTS', `${what} (netns ${ns.label}): RTNETLINK answers: File exists`);
        }
        const a = newLink(ns, 'veth', op.name, op.mtu ?? 1500, op.mac);
        const b = newLink(peerNs, 'veth', op.peer, op.mtu ?? 1500, op.peerMac);
        a.peer = b;
        b.peer = a;
        if (op.alias !== undefined) a.alias = op.alias;
        return;
      }
      case 'addMacvlan': {
        const lower = need(ns, op.parent, what);
        const target = op.netns === undefined ? ns : nsOf(op.netns, 'netns');
        if (find(target, op.name)) throw err('ALREADY_EXISTS', `${what} (netns ${target.label}): RTNETLINK answers: File exists`);
        if (lower.kind === 'loopback') throw err('INVALID_CONFIG', `${what} (netns ${ns.label}): RTNETLINK answers: Invalid argument`);
        const m = newLink(target, 'macvlan', op.name, op.mtu ?? lower.mtu, op.mac);
        m.lower = lower;
        settle();
        return;
      }
      case 'addVxlan': {
        if (find(ns, op.name)) throw err('ALREADY_EXISTS', `${what} (netns ${ns.label}): RTNETLINK answers: File exists`);
        if (op.dev !== undefined) need(ns, op.dev, what);
        if (ns.links.some((l) => l.kind === 'vxlan' && l.vni === op.vni)) throw err('ALREADY_EXISTS', `${what} (netns ${ns.label}): Error: A VXLAN device with the specified VNI already exists.`);
        const v = newLink(ns, 'vxlan', op.name, op.mtu ?? 1450, op.mac);
        v.vni = op.vni;
        return;
      }
      case 'ensureNeigh':
        need(ns, op.dev, what).neighs.set(op.ip, op.mac);
        return;
      case 'removeNeigh':
        find(ns, op.dev)?.neighs.delete(op.ip);
        return;
      case 'ensureFdb': {
        const l = need(ns, op.dev, what);
        if (l.kind !== 'vxlan') throw err('INVALID_CONFIG', `${what} (netns ${ns.label}): RTNETLINK answers: Operation not supported`);
        l.fdb.set(op.mac, op.dst);
        return;
      }
      case 'removeFdb': {
        const l = find(ns, op.dev);
        if (l !== undefined && l.fdb.get(op.mac) === op.dst) l.fdb.delete(op.mac);
        return;
      }
      case 'removeLink': {
        const l = find(ns, op.name);
        if (!l) return;
        if (l.kind === 'loopback') throw err('INVALID_CONFIG', `${what} (netns ${ns.label}): RTNETLINK answers: Operation not supported`);
        deleteLink(l);
        return;
      }
      case 'setLink':
        setLink(ns, need(ns, op.name, what), op.changes, what);
        return;
      case 'addAddr':
      case 'ensureAddr': {
        const l = need(ns, op.dev, what);
        const family = addrFamily(op.prefix);
        if (family === 6 && ipv6Disabled(l)) throw err('INVALID_CONFIG', `${what} (netns ${ns.label}): Error: ipv6: IPv6 is disabled on this device.`);
        const addr = prefixAddr(op.prefix);
        // IPv4 addresses are keyed by address and prefix length, IPv6 ones by address alone.
        const dup = ns.addrs.find((a) => a.link === l && prefixAddr(a.prefix) === addr && (family === 6 || a.prefix === op.prefix));
        if (dup || (family === 6 && l.linkLocal === addr)) {
          if (op.op === 'ensureAddr') return;
          throw err('ALREADY_EXISTS', `${what} (netns ${ns.label}): Error: ipv${family}: Address already assigned.`);
        }
        ns.addrs.push({ link: l, prefix: op.prefix, family });
        return;
      }
      case 'removeAddr': {
        const l = find(ns, op.dev);
        if (!l) return;
        ns.addrs = ns.addrs.filter((a) => !(a.link === l && a.prefix === op.prefix));
        if (l.linkLocal !== undefined && makePrefix(l.linkLocal, 64) === op.prefix) l.linkLocal = undefined;
        return;
      }
      case 'addRoute':
      case 'ensureRoute':
        addRoute(ns, op.route, what, op.op === 'ensureRoute');
        return;
      case 'removeRoute': {
        const r = op.route;
        const dev = r.dev !== undefined ? find(ns, r.dev) : undefined;
        if (r.dev !== undefined && !dev) return;
        const i = ns.routes.findIndex(
          (x) => x.dst === r.dst && (r.via === undefined || x.via === r.via) && (dev === undefined || x.link === dev) && (r.metric === undefined || x.metric === r.metric),
        );
        if (i >= 0) ns.routes.splice(i, 1);
        return;
      }
    }
  };

  const takeFailure = (op: FakeOpName, label: string): TsnetError | undefined => {
    const i = failures.findIndex((f) => f.op === op && (f.ns === undefined || f.ns === label));
    if (i < 0) return undefined;
    const [f] = failures.splice(i, 1);
    return f?.error;
  };

  /** Runs `fn` as one call: recorded, failure-injectable, and asynchronous like the real thing. */
  const call = <T>(ref: NetnsRef, op: FakeOpName, args: unknown, fn: () => T): Promise<T> => {
    const label = netnsLabel(ref);
    calls.push({ ns: label, op, args });
    try {
      const injected = takeFailure(op, label);
      if (injected) throw injected;
      return Promise.resolve(fn());
    } catch (e) {
      return Promise.reject(e);
    }
  };

  const mutate = (ref: NetnsRef, op: NetlinkOp): Promise<void> =>
    call(ref, op.op, op, () => {
      let ns: FNs;
      try {
        ns = nsOf(ref);
      } catch (e) {
        if (isRemove(op)) return; // a namespace that is gone has none of the objects a remove targets
        throw e;
      }
      apply(ns, op);
    });

  const handles = new Map<string, Netlink>();

  const makeHandle = (ref: NetnsRef): Netlink => {
    let closed = false;
    const guard = (): void => {
      if (closed) throw err('UNAVAILABLE', `netlink handle for netns ${netnsLabel(ref)} is closed`);
    };
    const one = (op: NetlinkOp): Promise<void> => {
      try {
        guard();
        return mutate(ref, validateOp(op));
      } catch (e) {
        return Promise.reject(e);
      }
    };
    const read = <T>(op: FakeOpName, args: unknown, fn: (ns: FNs) => T): Promise<T> => {
      try {
        guard();
      } catch (e) {
        return Promise.reject(e);
      }
      return call(ref, op, args, () => fn(nsOf(ref)));
    };
    const h: Netlink = {
      ns: ref,
      getLink: (name) =>
        read('getLink', name, (ns) => {
          const l = find(ns, checkIfName(name, 'name'));
          return l ? toLink(l) : undefined;
        }),
      listLinks: () => read('listLinks', undefined, (ns) => ns.links.map(toLink)),
      listAddrs: (dev) =>
        read('listAddrs', dev, (ns) => {
          if (dev === undefined) return addrsOf(ns);
          need(ns, checkIfName(dev, 'dev'), 'list addresses');
          return addrsOf(ns).filter((a) => a.dev === dev);
        }),
      listRoutes: (filter = {}) =>
        read('listRoutes', filter, (ns) => {
          if (filter.dev !== undefined) need(ns, checkIfName(filter.dev, 'dev'), 'list routes');
          return routesOf(ns).filter((r) => (filter.family === undefined || r.family === filter.family) && (filter.dev === undefined || r.dev === filter.dev));
        }),
      addBridge: (name, opts = {}) => one({ op: 'addBridge', name, ...opts }),
      ensureBridge: (name, opts = {}) => one({ op: 'ensureBridge', name, ...opts }),
      addVeth: (spec) => one({ op: 'addVeth', ...spec }),
      addMacvlan: (spec) => one({ op: 'addMacvlan', ...spec }),
      addVxlan: (spec) => one({ op: 'addVxlan', ...spec }),
      listNeighs: (dev) =>
        read('listNeighs', dev, (ns) => [...need(ns, checkIfName(dev, 'dev'), 'list neighbours').neighs].map(([ip, mac]) => ({ dev, ip: ip as IpAddr, mac }))),
      ensureNeigh: (x) => one({ op: 'ensureNeigh', ...x }),
      removeNeigh: (dev, ip) => one({ op: 'removeNeigh', dev, ip }),
      listFdb: (dev) =>
        read('listFdb', dev, (ns) => [...need(ns, checkIfName(dev, 'dev'), 'list fdb').fdb].map(([mac, dst]) => ({ dev, mac: mac as MacAddr, dst }))),
      ensureFdb: (x) => one({ op: 'ensureFdb', ...x }),
      removeFdb: (x) => one({ op: 'removeFdb', ...x }),
      removeLink: (name) => one({ op: 'removeLink', name }),
      setLink: (name, changes) => one({ op: 'setLink', name, changes }),
      addAddr: (dev, prefix, opts = {}) => one({ op: 'addAddr', dev, prefix, ...opts }),
      ensureAddr: (dev, prefix, opts = {}) => one({ op: 'ensureAddr', dev, prefix, ...opts }),
      removeAddr: (dev, prefix) => one({ op: 'removeAddr', dev, prefix }),
      addRoute: (route) => one({ op: 'addRoute', route }),
      ensureRoute: (route) => one({ op: 'ensureRoute', route }),
      removeRoute: (route) => one({ op: 'removeRoute', route }),
      async batch(ops): Promise<readonly BatchResult[]> {
        guard();
        const valid = validateOps(ops);
        const out: BatchResult[] = [];
        for (const op of valid) {
          out.push(
            await mutate(ref, op).then(
              (): BatchResult => ({ ok: true }),
              (e: unknown): BatchResult => ({ ok: false, error: e instanceof TsnetError ? e : err('INTERNAL', String(e)) }),
            ),
          );
        }
        return out;
      },
      async close() {
        closed = true;
        if (handles.get(netnsLabel(ref)) === h) handles.delete(netnsLabel(ref));
      },
    };
    return h;
  };

  const netlinkFor = Object.assign(
    (ref: NetnsRef): Netlink => {
      const key = netnsLabel(ref);
      let h = handles.get(key);
      if (!h) {
        h = makeHandle(ref);
        handles.set(key, h);
      }
      return h;
    },
    {
      async release(ref: NetnsRef) {
        await handles.get(netnsLabel(ref))?.close();
      },
      async closeAll() {
        await Promise.all([...handles.values()].map((h) => h.close()));
      },
    },
  ) satisfies NetlinkCache;

  // -- sysctls -------------------------------------------------------------------------------

  /** Where a key lives: a global value of the namespace or a per-device one; NOT_FOUND if nowhere. */
  const sysctlSlot = (ns: FNs, key: string): { read: () => string; write: (v: string) => void } => {
    const seg = key.split('.').map((s) => s.replaceAll('/', '.'));
    const [a, fam, conf, dev, attr, ...rest] = seg;
    if (a === 'net' && (fam === 'ipv4' || fam === 'ipv6') && conf === 'conf' && dev !== undefined && attr !== undefined && rest.length === 0) {
      const slot = `${fam}.${attr}`;
      const def = CONF_DEFAULTS[slot];
      if (def !== undefined) {
        if (dev === 'all' || dev === 'default') {
          return { read: () => ns.sysctl.get(key) ?? def, write: (v) => void ns.sysctl.set(key, v) };
        }
        const l = find(ns, dev);
        if (l) return { read: () => l.conf.get(slot) ?? def, write: (v) => void l.conf.set(slot, v) };
      }
    } else {
      const def = GLOBAL_SYSCTLS[key];
      if (def !== undefined) return { read: () => ns.sysctl.get(key) ?? def, write: (v) => void ns.sysctl.set(key, v) };
    }
    throw err('NOT_FOUND', `sysctl ${key} (netns ${ns.label}): No such file or directory`, { field: 'sysctl key', value: key });
  };

  const sysctlFor: SysctlFor = (ref): Sysctl => ({
    ns: ref,
    get: (key) =>
      call(ref, 'sysctlGet', key, () => sysctlSlot(nsOf(ref), parseSysctlKey(key)).read()),
    set: (values) => {
      let entries: [string, string][];
      try {
        entries = Object.entries(values).map(([k, v]) => [parseSysctlKey(k), parseSysctlValue(v, k)]);
      } catch (e) {
        return Promise.reject(e);
      }
      return call(ref, 'sysctlSet', values, () => {
        const ns = nsOf(ref);
        let first: TsnetError | undefined;
        for (const [k, v] of entries) {
          try {
            const slot = sysctlSlot(ns, k);
            if (!/^-?\d+(\s+-?\d+)*$/.test(v)) throw err('INVALID_CONFIG', `sysctl ${k}=${v} (netns ${ns.label}): Invalid argument`, { field: k, value: v });
            slot.write(v);
          } catch (e) {
            first ??= e instanceof TsnetError ? e : err('INTERNAL', String(e));
          }
        }
        settle();
        if (first) throw first;
      });
    },
  });

  return {
    netlinkFor,
    sysctlFor,
    addNetns(path) {
      const ref: NetnsRef = { kind: 'path', path: path ?? `/run/fake-netns/ns-${nextNs++}` };
      if (namespaces.has(netnsLabel(ref))) throw err('ALREADY_EXISTS', `netns ${ref.path} already exists`);
      addNs(ref);
      return ref;
    },
    removeNetns(ref) {
      const ns = namespaces.get(netnsLabel(ref));
      if (!ns || ref.kind === 'host') return;
      for (const l of [...ns.links]) if (ns.links.includes(l)) deleteLink(l);
      namespaces.delete(ns.label);
      settle();
    },
    hasNetns: (ref) => namespaces.has(netnsLabel(ref)),
    isolatedPort: (ref, name) => {
      const ns = namespaces.get(netnsLabel(ref));
      return ns !== undefined && find(ns, name)?.isolated === true;
    },
    failNext(op, error, opts = {}) {
      failures.push({ op, ns: opts.ns === undefined ? undefined : netnsLabel(opts.ns), error });
    },
    calls,
    clearCalls() {
      calls.length = 0;
    },
  };
}
