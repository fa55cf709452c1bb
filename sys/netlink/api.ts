/**
 * The kernel link/address/route layer as drivers see it. A `Netlink` handle is bound to ONE network
 * namespace when it is created (Node cannot setns(2) its own thread), and a `NetlinkFor` hands out
 * one long-lived handle per namespace. Implementations: `sys/netlink/iproute2.ts` (long-lived
 * `ip -batch` processes) and `sys/netlink/fake.ts` (in memory, for tests). The interface is kept
 * narrow so that an in-house rtnetlink socket could replace iproute2 later.
 *
 * Verbs: `ensureX` creates if absent (succeeds if present), `addX` fails with ALREADY_EXISTS if
 * present, `removeX` succeeds if absent. Inputs are branded types (parse at the boundary); the
 * implementations still re-check them before touching the kernel (a name with a space or newline
 * must never reach a batch stream), so a malformed value is INVALID_CONFIG naming the field, and
 * nothing of a batch with a malformed op is applied.
 *
 * Errors are TsnetError: ALREADY_EXISTS, NOT_FOUND (missing link, address, route or namespace),
 * INVALID_CONFIG (rejected input, or a request the kernel refuses: MTU out of range, gateway not
 * reachable, device down...), UNAVAILABLE (the helper process died or timed out; the operation may
 * or may not have been applied; the next call starts a new process), EXHAUSTED, INTERNAL.
 */
import type { TsnetError } from '../../core/errors.js';
import type { Family, IfName, IpAddr, MacAddr, MacvlanMode, NetnsRef, Prefix } from '../../core/net.js';

/** A network interface as the kernel reports it. */
export interface Link {
  readonly name: IfName;
  /** ifindex, unique within the namespace. */
  readonly index: number;
  /** The link type (`bridge`, `veth`, ...); undefined for loopback and physical devices. */
  readonly kind: string | undefined;
  /** Administratively up (IFF_UP). */
  readonly up: boolean;
  /** Carrier present (IFF_LOWER_UP): for a veth, both ends are up. */
  readonly carrier: boolean;
  readonly mtu: number;
  readonly mac: MacAddr | undefined;
  /** The bridge (or other master) this link is a port of. */
  readonly master: IfName | undefined;
  /** The interface alias (ifalias): tsnet's owner tag on what it created. */
  readonly alias?: string | undefined;
  /** The link a macvlan/vlan/vxlan sits on (its name in this namespace, when it is here). */
  readonly parent?: IfName | undefined;
  /** A VXLAN device's VNI. */
  readonly vni?: number | undefined;
}

export interface Addr {
  readonly dev: IfName;
  /** Address and prefix length, canonical ("10.0.0.2/24", "fd00::2/64"). */
  readonly prefix: Prefix;
  readonly family: Family;
  /** `global`, `link` (e.g. IPv6 link-local fe80::/64), `host` (loopback). */
  readonly scope: string;
}

/** A route of the main table. */
export interface Route {
  /** Destination; the default route is `0.0.0.0/0` or `::/0`. */
  readonly dst: Prefix;
  readonly family: Family;
  readonly via: IpAddr | undefined;
  readonly dev: IfName | undefined;
  /** 0 when unset for IPv4; IPv6 routes default to 1024 (kernel routes 256). */
  readonly metric: number;
  /** Who installed it: `kernel` (connected/prefix routes), `boot` (ip's default), `static`... */
  readonly proto: string;
  /** `global` (universe), `link`, `host`. */
  readonly scope: string;
  /** Preferred source address, if set. */
  readonly src: IpAddr | undefined;
}

export interface BridgeOptions {
  readonly mtu?: number;
  readonly mac?: MacAddr;
}

export interface VethSpec {
  /** The end created in this handle's namespace. */
  readonly name: IfName;
  /** The other end, created directly in `peerNetns` (default: this handle's namespace). */
  readonly peer: IfName;
  readonly peerNetns?: NetnsRef;
  /** MTU of both ends. */
  readonly mtu?: number;
  readonly mac?: MacAddr;
  readonly peerMac?: MacAddr;
  /** The alias (an owner tag: letters, digits and _ . : / @ + = -, at most 255) of the end created
   *  in this namespace. */
  readonly alias?: string;
}


/** A macvlan on `parent` (a link of this handle's namespace), created directly in `netns` under `name`. */
export interface MacvlanSpec {
  readonly name: IfName;
  readonly parent: IfName;
  readonly mode: MacvlanMode;
  /** Where the macvlan is created (default: this handle's namespace). */
  readonly netns?: NetnsRef;
  readonly mtu?: number;
  readonly mac?: MacAddr;
}

/**
 * A VXLAN device (RFC 7348) in this handle's namespace: `vni` on UDP `port` (default 4789), sourced
 * from `local`, with address learning off (the peers' entries are installed, never learnt by
 * flooding) and ARP/ND proxy on (the device answers for the neighbour entries it holds, so no
 * broadcast crosses the underlay). It starts down.
 */
export interface VxlanSpec {
  readonly name: IfName;
  readonly vni: number;
  readonly local: IpAddr;
  readonly port?: number;
  /** The underlay device (optional: the route to each peer decides otherwise). */
  readonly dev?: IfName;
  readonly mtu?: number;
  readonly mac?: MacAddr;
}

/** A permanent neighbour entry (IP → MAC) on a device: what a VXLAN proxy answers ARP/ND with. */
export interface Neigh {
  readonly dev: IfName;
  readonly ip: IpAddr;
  readonly mac: MacAddr;
}

/** A forwarding entry of a VXLAN device (`bridge fdb ... self`): frames for `mac` go to the VTEP `dst`. */
export interface FdbEntry {
  readonly dev: IfName;
  readonly mac: MacAddr;
  readonly dst: IpAddr;
}

/** Changes to an existing link, applied in one kernel request. An empty object is a no-op. */
export interface LinkChanges {
  readonly up?: boolean;
  readonly mtu?: number;
  readonly mac?: MacAddr;
  /** A bridge to attach the link to, or `null` to detach it (nomaster). */
  readonly master?: IfName | null;
  /** Rename the link. */
  readonly name?: IfName;
  /**
   * Bridge port isolation (`bridge_slave isolated`): isolated ports of a bridge cannot exchange
   * frames with each other, only with non-isolated ports and the bridge itself. Applied after
   * `master`, so both may be given at once; NOT_FOUND/INVALID_CONFIG if the link is no bridge port.
   */
  readonly isolated?: boolean;
  /** The interface alias (an owner tag), same characters as BridgeOptions.alias. */
  readonly alias?: string;
  /** Bridge port hairpin mode (`bridge_slave hairpin`): frames may go back out of the port they came in
   *  on (a container reaching itself through a published port). Same rules as `isolated`. */
  readonly hairpin?: boolean;
}

export interface AddrOptions {
  /** IPv6 only: skip duplicate address detection, so the address is usable at once. */
  readonly nodad?: boolean;
}

export interface RouteSpec {
  /** A network prefix (host bits zero); `0.0.0.0/0` / `::/0` for the default route. */
  readonly dst: Prefix;
  /** Gateway; same family as dst. Adding a route needs `via` or `dev` (or both); a remove may give `dst` alone. */
  readonly via?: IpAddr;
  readonly dev?: IfName;
  readonly metric?: number;
  /** Preferred source address. */
  readonly src?: IpAddr;
}

/**
 * The mutations, as data: what `batch` takes. Each method of `Netlink` of the same name does exactly
 * this one op.
 */
export type NetlinkOp =
  | ({ readonly op: 'addBridge'; readonly name: IfName } & BridgeOptions)
  | ({ readonly op: 'ensureBridge'; readonly name: IfName } & BridgeOptions)
  | ({ readonly op: 'addVeth' } & VethSpec)
  | ({ readonly op: 'addMacvlan' } & MacvlanSpec)
  | ({ readonly op: 'addVxlan' } & VxlanSpec)
  | ({ readonly op: 'ensureNeigh' } & Neigh)
  | { readonly op: 'removeNeigh'; readonly dev: IfName; readonly ip: IpAddr }
  | ({ readonly op: 'ensureFdb' } & FdbEntry)
  | ({ readonly op: 'removeFdb' } & FdbEntry)
  | { readonly op: 'removeLink'; readonly name: IfName }
  | { readonly op: 'setLink'; readonly name: IfName; readonly changes: LinkChanges }
  | ({ readonly op: 'addAddr'; readonly dev: IfName; readonly prefix: Prefix } & AddrOptions)
  | ({ readonly op: 'ensureAddr'; readonly dev: IfName; readonly prefix: Prefix } & AddrOptions)
  | { readonly op: 'removeAddr'; readonly dev: IfName; readonly prefix: Prefix }
  | { readonly op: 'addRoute'; readonly route: RouteSpec }
  | { readonly op: 'ensureRoute'; readonly route: RouteSpec }
  | { readonly op: 'removeRoute'; readonly route: RouteSpec };

export type NetlinkOpName = NetlinkOp['op'];

export type BatchResult = { readonly ok: true } | { readonly ok: false; readonly error: TsnetError };

export interface Netlink {
  /** The namespace every operation of this handle acts in. */
  readonly ns: NetnsRef;

  /** The link named `name`, or undefined if there is none. */
  getLink(name: IfName): Promise<Link | undefined>;
  listLinks(): Promise<readonly Link[]>;
  /** Creates a bridge; ALREADY_EXISTS if a link of that name exists. */
  addBridge(name: IfName, opts?: BridgeOptions): Promise<void>;
  /** Creates a bridge unless a bridge of that name exists (options apply only when creating);
   *  ALREADY_EXISTS if a link of that name exists that is not a bridge. */
  ensureBridge(name: IfName, opts?: BridgeOptions): Promise<void>;
  /** Creates a veth pair, the peer directly in `peerNetns`; ALREADY_EXISTS if either name is taken
   *  (in its namespace), NOT_FOUND if `peerNetns` does not exist. Both ends start down. */
  addVeth(spec: VethSpec): Promise<void>;
  /** Creates a macvlan on `parent`, directly in `netns`; ALREADY_EXISTS if the name is taken there,
   *  NOT_FOUND if the parent or the namespace does not exist. It starts down. */
  addMacvlan(spec: MacvlanSpec): Promise<void>;
  /** Creates a VXLAN device (learning off, proxy on); ALREADY_EXISTS if the name is taken. */
  addVxlan(spec: VxlanSpec): Promise<void>;
  /** Deletes a link (for a veth, both ends); succeeds if it does not exist. */
  removeLink(name: IfName): Promise<void>;
  /** NOT_FOUND if the link (or the new master) does not exist. */
  setLink(name: IfName, changes: LinkChanges): Promise<void>;

  /** Addresses of `dev` (NOT_FOUND if it does not exist), or of every link. */
  listAddrs(dev?: IfName): Promise<readonly Addr[]>;
  /** ALREADY_EXISTS if `dev` has that address. */
  addAddr(dev: IfName, prefix: Prefix, opts?: AddrOptions): Promise<void>;
  ensureAddr(dev: IfName, prefix: Prefix, opts?: AddrOptions): Promise<void>;
  /** Succeeds if the address (or the device) is not there. */
  removeAddr(dev: IfName, prefix: Prefix): Promise<void>;

  /** Routes of the main table, optionally only one family or one device (NOT_FOUND if it does not exist). */
  listRoutes(filter?: { readonly family?: Family; readonly dev?: IfName }): Promise<readonly Route[]>;
  /** ALREADY_EXISTS if a route to `dst` with the same metric exists. */
  addRoute(route: RouteSpec): Promise<void>;
  /** Creates the route, or replaces the one to `dst` with the same metric (`ip route replace`). */
  ensureRoute(route: RouteSpec): Promise<void>;
  /** Removes the first route matching the given fields (unset fields match anything); succeeds if none. */
  removeRoute(route: RouteSpec): Promise<void>;

  /** The permanent neighbour entries of `dev` (NOT_FOUND if it does not exist). */
  listNeighs(dev: IfName): Promise<readonly Neigh[]>;
  /** Creates or replaces the permanent entry of `ip` on `dev`; NOT_FOUND if `dev` does not exist. */
  ensureNeigh(n: Neigh): Promise<void>;
  /** Succeeds if the entry (or the device) is not there. */
  removeNeigh(dev: IfName, ip: IpAddr): Promise<void>;
  /** The VXLAN forwarding entries of `dev` that have a destination (NOT_FOUND if it does not exist). */
  listFdb(dev: IfName): Promise<readonly FdbEntry[]>;
  /** Creates or replaces the entry of `mac` on the VXLAN device `dev`; NOT_FOUND if `dev` does not exist. */
  ensureFdb(e: FdbEntry): Promise<void>;
  /** Succeeds if the entry (or the device) is not there. */
  removeFdb(e: FdbEntry): Promise<void>;

  /**
   * Runs `ops` in order in one round trip and reports each op's outcome (a failed op does not stop
   * the later ones). Rejects with INVALID_CONFIG, applying nothing, if any op is malformed.
   */
  batch(ops: readonly NetlinkOp[]): Promise<readonly BatchResult[]>;

  /** Finishes what is in flight and releases the handle; later calls fail with UNAVAILABLE. */
  close(): Promise<void>;
}

/** One long-lived handle per namespace (the same handle for the same namespace). */
export type NetlinkFor = (ns: NetnsRef) => Netlink;

/** A `NetlinkFor` that owns its handles: the composition root keeps it and closes it at exit. */
export interface NetlinkCache {
  (ns: NetnsRef): Netlink;
  /** Closes and forgets the handle of `ns`, if any (e.g. when that namespace is being deleted:
   *  a live helper process inside a namespace keeps it alive). */
  release(ns: NetnsRef): Promise<void>;
  closeAll(): Promise<void>;
}

/**
 * Kernel parameters under /proc/sys, bound to one namespace like `Netlink` (/proc/sys/net is per
 * network namespace of the process that opens it). Keys use sysctl(8)'s dotted form; a '.' inside
 * one segment (an interface named `br.5`) is written '/': `net.ipv4.conf.br/5.forwarding`.
 */
export interface Sysctl {
  readonly ns: NetnsRef;
  /** The value (trimmed) of a key like `net.ipv4.ip_forward`; NOT_FOUND if there is no such key. */
  get(key: string): Promise<string>;
  /**
   * Sets every key (in order, in one process for a foreign namespace). All keys are validated
   * first; the first failure (NOT_FOUND for a missing key, INVALID_CONFIG for a refused value) is
   * thrown after every other key was attempted.
   */
  set(values: Readonly<Record<string, string | number>>): Promise<void>;
}

export type SysctlFor = (ns: NetnsRef) => Sysctl;
