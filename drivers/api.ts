/**
 * The network driver contract. Drivers get addresses already allocated (they never call IPAM), never
 * spell a firewall rule (they state intent to sys/firewall), and act only through injected ports.
 * Network and endpoint data arrive as plain records; a driver keeps no state of its own: what it
 * needs again later (bridge name, MTU...) it returns from `validateNetwork` as its config, which the
 * controller persists with the network and hands back on every call.
 */
import type { Logger } from '../core/log.js';
import type { EndpointId, IfName, IpAddr, MacAddr, NetnsRef, NetworkId, Prefix } from '../core/net.js';
import type { Firewall, PortMapping } from '../sys/firewall/api.js';
import type { NetlinkFor, SysctlFor } from '../sys/netlink/api.js';

export type DriverType = 'bridge' | 'host' | 'none' | 'container';
export const DRIVER_TYPES = ['bridge', 'host', 'none', 'container'] as const satisfies readonly DriverType[];

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
  readonly mac?: MacAddr;
  readonly mtu?: number;
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

export interface NetworkDriver {
  readonly type: DriverType;
  /** Networks of this driver carry a bridge/veth data path, addresses and a firewall policy. */
  readonly hasDataPath: boolean;
  /** Pure: parses the options; INVALID_CONFIG naming the option. The result is persisted. */
  validateNetwork(spec: NetworkSpec): DriverConfig;
  /** Makes the network exist in the kernel. Idempotent: also used to restore it (reconcile). */
  createNetwork(spec: NetworkSpec, config: DriverConfig): Promise<void>;
  /** Removes the network from the kernel; succeeds if it is gone. */
  deleteNetwork(spec: NetworkSpec, config: DriverConfig): Promise<void>;
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
  /** Withdraws every published port of the endpoint; idempotent. */
  unpublish(endpointId: EndpointId): Promise<void>;
}

export type DriverFactory = (deps: DriverDeps) => NetworkDriver;
