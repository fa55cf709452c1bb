/**
 * The network driver contract. Drivers get addresses already allocated (they never call IPAM), never
 * spell a firewall rule (they state intent to sys/firewall), and act only through injected ports.
 * Network and endpoint data arrive as plain records; a driver keeps no state of its own: what it
 * needs again later (bridge name, MTU...) it returns from `validateNetwork` as its config, which the
 * controller persists with the network and hands back on every call.
 */
import type { Logger } from '../core/log.js';
import type { EndpointId, IfName, IpAddr, MacAddr, NetnsRef, NetworkId, Prefix } from '../core/net.js';
import type { Shape, TcFor } from '../sys/api.js';
import type { Firewall, PortMapping } from '../sys/firewall/api.js';
import type { NetlinkFor, RouteSpec, SysctlFor } from '../sys/netlink/api.js';
import type { OwnerTag } from './owner.js';

export type { OwnerTag };

export type DriverType = 'bridge' | 'host' | 'none' | 'container' | 'macvlan' | 'overlay';
export const DRIVER_TYPES = ['bridge', 'host', 'none', 'container', 'macvlan', 'overlay'] as const satisfies readonly DriverType[];

export interface DriverDeps {
  /** The namespace playing "host" (where bridges and host-side veths live). */
  readonly hostNs: NetnsRef;
  readonly netlink: NetlinkFor;
  readonly sysctl: SysctlFor;
  /** Bound to `hostNs`. */
  readonly firewall: Firewall;
  readonly log: Logger;
  /** `bytes` random bytes as lowercase hex (veth names, MAC addresses). */
  readonly randomHex: (bytes: number) => string;
  /** Traffic shaping (an endpoint's bandwidth limits). */
  readonly tc: TcFor;
  /** This host's VTEP address on the underlay (`--cluster-advertise`), when it is in a cluster. */
  readonly advertise?: IpAddr;
  /**
   * Runs `fn` holding a cross-process lock (released by the kernel if the holder dies): a network's
   * first setup when several processes may race to make it (CNI ADDs).
   */
  readonly withLock: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
}

/** One subnet of a network with its gateway (allocated by IPAM). */
export interface SubnetAssignment {
  readonly subnet: Prefix;
  readonly gateway: IpAddr;
}

/** A network as a driver sees it. */
export interface NetworkSpec {
  readonly id: NetworkId;
  readonly name: string;
  readonly subnets: readonly SubnetAssignment[];
  readonly internal: boolean;
  /** Driver options as given (`-o key=value`), strings like Docker's. */
  readonly options: Readonly<Record<string, string>>;
  /** The tag written on (and required of) the kernel objects this network makes (drivers/owner.ts). */
  readonly owner: OwnerTag;
}

/** What a driver persists about a network (JSON). */
export type DriverConfig = Readonly<Record<string, unknown>>;

export interface JoinRequest {
  readonly network: NetworkSpec;
  readonly config: DriverConfig;
  readonly endpointId: EndpointId;
  /** The sandbox's namespace. */
  readonly sandbox: NetnsRef;
  /** The interface name inside the sandbox (eth0, eth1, ...). */
  readonly ifName: IfName;
  /** The host-side interface name, chosen (and recorded) by the controller before the join, so a
   *  crash in the middle leaves a record that names what to clean. */
  readonly hostIf: IfName;
  /** The endpoint's addresses, with the subnet's prefix length. */
  readonly addresses: readonly Prefix[];
  readonly mac?: MacAddr;
  /** Install the default route(s) through this network's gateways. */
  readonly defaultRoute: boolean;
  /** More routes inside the sandbox (a route without `via` goes through the network's gateway of its family). */
  readonly routes?: readonly RouteSpec[];
  /** Rate limits: `ingress` into the sandbox, `egress` out of it (tbf). */
  readonly bandwidth?: { readonly ingress?: Shape; readonly egress?: Shape };
  /**
   * The network may not be set up in the kernel yet (a CNI ADD: the configuration is the network):
   * set it up first when its bridge is missing, under the network's lock, and make sure the gateway
   * addresses are there (in the same round trip as the join when the bridge is up).
   */
  readonly ensureNetwork?: boolean;
  /**
   * The sandbox was created with `net.ipv6.conf.default.disable_ipv6=1` (tsnet's own sandboxes):
   * new interfaces start without IPv6, so an IPv4-only join needs no sysctl write. Unknown
   * (a namespace made by someone else): the driver disables IPv6 itself on IPv4-only joins.
   */
  readonly ipv6OffByDefault?: boolean;
}

export interface JoinResult {
  /** The host-side interface, if the driver made one. */
  readonly hostIf?: IfName;
  readonly hostMac?: MacAddr;
  /** The sandbox interface's MAC. */
  readonly mac?: MacAddr;
  readonly mtu?: number;
  /** Routes installed in the sandbox. */
  readonly routes?: readonly RouteSpec[];
}

/**
 * A join where someone else owns the sandbox (Docker's remote driver protocol): the container end
 * of the veth pair stays in the host namespace under a temporary name, with only its MAC and MTU
 * set; the engine moves it into its sandbox, renames it and configures its addresses and routes.
 * The matching leave is the ordinary `leave` with `hostIf` (deleting the host end deletes the pair
 * wherever its peer is).
 */
export interface HostPeerJoinRequest {
  readonly network: NetworkSpec;
  readonly config: DriverConfig;
  readonly endpointId: EndpointId;
  /** The host-side interface (on the bridge). */
  readonly hostIf: IfName;
  /** The container end's temporary name in the host namespace. */
  readonly peerIf: IfName;
  readonly mac?: MacAddr;
}

export interface LeaveRequest {
  readonly network: NetworkSpec;
  readonly config: DriverConfig;
  readonly endpointId: EndpointId;
  readonly sandbox: NetnsRef;
  readonly ifName: IfName;
  readonly hostIf?: IfName;
}

export interface PublishRequest {
  readonly network: NetworkSpec;
  readonly config: DriverConfig;
  readonly endpointId: EndpointId;
  readonly mappings: readonly PortMapping[];
}

export interface RestoreRequest {
  readonly networks: readonly { readonly spec: NetworkSpec; readonly config: DriverConfig }[];
  /** Endpoints (of those networks) with published ports. */
  readonly ports: readonly PublishRequest[];
  readonly force?: boolean;
}

export interface RestoreResult {
  readonly networks: NetworkId[];
  readonly endpoints: EndpointId[];
}

/** An endpoint of another host on a cluster network: its address, MAC and that host's VTEP. */
export interface Peer {
  readonly ip: IpAddr;
  readonly mac: MacAddr;
  readonly vtep: IpAddr;
}

export interface NetworkDriver {
  readonly type: DriverType;
  /** 'cluster': its networks span the hosts of a cluster (records in the cluster store). */
  readonly scope?: 'cluster';
  /**
   * Makes the kernel's entries for the other hosts' endpoints exactly `peers` (cluster drivers):
   * installs the missing ones, replaces changed ones, removes the others; returns what it changed.
   */
  syncPeers?(spec: NetworkSpec, config: DriverConfig, peers: readonly Peer[]): Promise<{ readonly added: number; readonly removed: number }>;
  /** Networks of this driver carry a bridge/veth data path, addresses and a firewall policy. */
  readonly hasDataPath: boolean;
  /** Pure: parses the options; INVALID_CONFIG naming the option. The result is persisted. */
  validateNetwork(spec: NetworkSpec): DriverConfig;
  /**
   * Makes the network exist in the kernel. Idempotent: also used to restore it (reconcile). Undoes
   * its own steps on failure and never touches what it did not make (an interface of that name that
   * is not tsnet's is refused or, for a user's bridge, used as it is). Resolves with the config to
   * persist when it changed (what it had to adopt), else undefined.
   */
  createNetwork(spec: NetworkSpec, config: DriverConfig): Promise<DriverConfig | undefined>;
  /** Removes from the kernel what the network made (and only that); succeeds if it is gone. */
  deleteNetwork(spec: NetworkSpec, config: DriverConfig): Promise<void>;
  /**
   * Host-side interfaces this driver made for the network's endpoints that `keep` does not name
   * (CNI GC: the attachments a runtime no longer knows); removes them and returns their names.
   */
  sweepEndpoints?(spec: NetworkSpec, config: DriverConfig, keep: ReadonlySet<string>): Promise<string[]>;
  /**
   * Removes what a network of this driver made whose record is lost (it could not be read): found by
   * its owner tag (`owner`: this store's scope and the network's id), never by a name; returns the
   * names of the interfaces removed. The firewall policy and ports of `networkId` go too.
   */
  removeLeftovers?(networkId: NetworkId, owner: OwnerTag): Promise<string[]>;
  /** Whether the network's kernel objects serve no endpoint any more (a CNI network no attachment uses). */
  isUnused?(spec: NetworkSpec, config: DriverConfig): Promise<boolean>;
  /** What is wrong with a joined endpoint in the kernel (CNI CHECK); [] when all is there. */
  checkJoin?(req: JoinRequest): Promise<string[]>;
  /**
   * Re-creates what is missing in the kernel for these networks and their endpoints' published
   * ports (a bridge deleted, firewall rules flushed) and returns what it restored. Checks all of
   * them at once, cheaply: one link listing and one firewall listing, not a process per network.
   * `force`: re-applies everything whatever the kernel shows (`tsnet firewall reload`).
   */
  restore(req: RestoreRequest): Promise<RestoreResult>;
  /** Connects a sandbox; undoes its own steps on failure. */
  join(req: JoinRequest): Promise<JoinResult>;
  /** Connects a veth pair whose container end stays in the host namespace (drivers with a data path). */
  joinHostPeer?(req: HostPeerJoinRequest): Promise<JoinResult>;
  /** Disconnects; succeeds if already gone; never needs the sandbox namespace to still exist. */
  leave(req: LeaveRequest): Promise<void>;
  /** Publishes ports of an endpoint (bridge only; others reject with INVALID_CONFIG). */
  publish(req: PublishRequest): Promise<void>;
  /**
   * Withdraws every published port of the endpoint; idempotent. `published`: what publish was given
   * for it (the endpoint's record), so that exactly those can be removed without a search.
   */
  unpublish(endpointId: EndpointId, published?: PublishRequest): Promise<void>;
}

export type DriverFactory = (deps: DriverDeps) => NetworkDriver;
