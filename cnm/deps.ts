/**
 * What the controller's modules work over: the ports the composition root builds (state, IPAM,
 * drivers, kernel handles, files) and the requests every door sends. The modules are free functions
 * over these (networks.ts, sandboxes.ts, endpoints.ts, publish.ts, reconcile.ts); controller.ts only
 * binds them.
 */
import type { Logger } from '../core/log.js';
import type { IpAddr, NetnsRef, NetworkId, Prefix, SandboxId } from '../core/net.js';
import type { DriverRegistry } from '../drivers/registry.js';
import type { Ipam } from '../ipam/api.js';
import type { HostPorts, NetnsManager } from '../sys/api.js';
import type { PortMapping } from '../sys/firewall/api.js';
import type { NetlinkCache, SysctlFor } from '../sys/netlink/api.js';
import type { TcFor } from '../sys/api.js';
import type { EndpointRecord, NetworkRecord, SandboxRecord } from './model.js';
import type { CnmState } from './state.js';

export interface SandboxFiles {
  /** The directory for a sandbox's files (hosts, resolv.conf). */
  dirFor(id: SandboxId): string;
  write(path: string, content: string): Promise<void>;
  /** Removes the directory; succeeds if it is gone. */
  removeDir(dir: string): Promise<void>;
}

/** What changed in the records (for the DNS daemon, and later other listeners). */
export interface CnmChange {
  readonly kind: 'network-created' | 'network-deleted' | 'connected' | 'disconnected' | 'sandbox-deleted';
  readonly networkIds: readonly NetworkId[];
  /** Whether one of those networks is served by the embedded resolver. */
  readonly dns: boolean;
  /** The endpoints created or removed (connected, disconnected, sandbox-deleted). */
  readonly endpointIds?: readonly string[];
  /** The sandbox concerned (connected, disconnected, sandbox-deleted). */
  readonly sandboxIds?: readonly string[];
}

/** An endpoint of another host on a cluster network, as the cluster store has it. */
export interface RemoteEndpoint {
  readonly networkId: NetworkId;
  readonly endpointId: string;
  readonly sandboxId: string;
  readonly host: string;
  readonly hostName: string;
  readonly vtep: IpAddr;
  readonly ip: IpAddr;
  readonly mac: string;
  /** Container name first, then hostname, aliases, short id (as local endpoints' DNS names). */
  readonly names: readonly string[];
}

/** What a cluster network's record in the cluster store gives the local copy. */
export interface ClusterNetworkSpec {
  readonly id: NetworkId;
  readonly name: string;
  readonly driver: string;
  readonly subnets: readonly { readonly subnet: Prefix; readonly gateway: IpAddr; readonly ipRange?: Prefix }[];
  readonly internal: boolean;
  readonly options: Readonly<Record<string, string>>;
  readonly labels: Readonly<Record<string, string>>;
  readonly dnsEnabled: boolean;
  readonly created: string;
}

/**
 * The cluster (cluster/port.ts over the cluster store): networks that span hosts, their addresses
 * (blocks leased to hosts) and the endpoints every host publishes. Absent: this host is in no cluster.
 * Every call that needs the store fails fast (UNAVAILABLE naming it) when it is unreachable.
 */
export interface ClusterPort {
  /** Allocates the network cluster-wide (name, VNI, subnet unique) and returns its record. */
  createNetwork(req: { readonly id: NetworkId; readonly name: string; readonly driver: string; readonly subnets: readonly SubnetRequest[]; readonly internal: boolean; readonly options: Readonly<Record<string, string>>; readonly labels: Readonly<Record<string, string>>; readonly dnsEnabled: boolean }): Promise<ClusterNetworkSpec>;
  /** Removes it from the store; ALREADY_EXISTS naming the hosts when some host has endpoints on it. */
  deleteNetwork(id: NetworkId, name: string): Promise<void>;
  /** A cluster network by name or id; undefined if there is none. */
  findNetwork(idOrName: string): Promise<ClusterNetworkSpec | undefined>;
  /** An address for `owner`: from this host's blocks (no store round trip unless a new block is needed), or exactly `ip`. */
  requestAddress(net: NetworkRecord, owner: string, ip?: IpAddr): Promise<Prefix>;
  releaseOwner(net: NetworkRecord, owner: string): Promise<void>;
  /** Publishes a ready endpoint (one round trip): ALREADY_EXISTS when another endpoint holds its address anywhere. */
  publishEndpoint(net: NetworkRecord, ep: EndpointRecord, names: readonly string[]): Promise<void>;
  /** Withdraws it; succeeds if it is gone, and when the store is unreachable (the agent withdraws it when it returns). */
  withdrawEndpoint(net: NetworkRecord, ep: EndpointRecord): Promise<void>;
  /** The endpoints of the other hosts on the network. */
  remoteEndpoints(networkId: NetworkId): Promise<readonly RemoteEndpoint[]>;
}

export interface ControllerDeps {
  readonly state: CnmState;
  readonly ipam: Ipam;
  readonly drivers: DriverRegistry;
  readonly netns: NetnsManager;
  readonly hostNs: NetnsRef;
  readonly netlink: NetlinkCache;
  /** Sockets host processes listen on and the ephemeral port range, in `hostNs`. */
  readonly hostPorts: HostPorts;
  readonly files: SandboxFiles;
  /**
   * Whose kernel objects these are (drivers/owner.ts): the store's engine id, and its state
   * directory for messages ("tsnet0 belongs to the store at ...").
   */
  readonly owner: { readonly scope: string; readonly where?: string };
  /**
   * The container's resolv.conf for the given options (dns/resolv-conf.ts over the host's files);
   * `embedded`: the embedded resolver's address on the container's network, when it serves it.
   */
  readonly resolvConf: (opts: { readonly dns: readonly IpAddr[]; readonly dnsSearch: readonly string[]; readonly dnsOptions: readonly string[]; readonly embedded?: IpAddr }) => Promise<string>;
  /** The container's /etc/hosts (dns/hosts-file.ts). */
  readonly hostsFile: (self: readonly { ip: IpAddr; names: string[] }[], extra: readonly { ip: IpAddr; names: string[] }[]) => string;
  readonly log: Logger;
  readonly randomHex: (bytes: number) => string;
  readonly now: () => Date;
  /** Sysctls per namespace (IPv6 on a link end); traffic control (link impairments): links.ts. */
  readonly sysctl?: SysctlFor;
  readonly tc?: TcFor;
  /**
   * Called after a mutation succeeded, holding no lock (the embedded DNS daemon reloads from the
   * records and acks, so a new container resolves when `run` returns). Failures are logged only:
   * the mutation is done.
   */
  readonly onChange?: (e: CnmChange) => Promise<void>;
  /** The cluster this host is in (overlay networks); absent: none. */
  readonly cluster?: ClusterPort;
}

export interface SubnetRequest {
  readonly subnet?: string;
  readonly gateway?: string;
  readonly ipRange?: string;
  readonly auxAddresses?: Readonly<Record<string, string>>;
}

export interface CreateNetworkRequest {
  readonly name: string;
  readonly driver?: string;
  readonly subnets?: readonly SubnetRequest[];
  readonly ipv6?: boolean;
  readonly internal?: boolean;
  readonly options?: Readonly<Record<string, string>>;
  readonly labels?: Readonly<Record<string, string>>;
  /** false: no embedded DNS on this network (`--disable-dns`). */
  readonly dnsEnabled?: boolean;
}

/**
 * A network a door makes with its own id and subnets its own IPAM assigned (Docker's CreateNetwork:
 * the addresses came from an IPAM driver, tsnet's or another).
 */
export interface CreateDoorNetworkRequest {
  readonly door: 'docker';
  readonly id: string;
  readonly name: string;
  readonly driver: string;
  readonly subnets: readonly { readonly subnet: string; readonly gateway: string }[];
  readonly internal: boolean;
  readonly options: Readonly<Record<string, string>>;
}

export type NetworkMode =
  | { readonly kind: 'network'; readonly network: string }
  | { readonly kind: 'host' }
  | { readonly kind: 'none' }
  | { readonly kind: 'container'; readonly target: string };

export interface CreateSandboxRequest {
  readonly id?: string;
  readonly name: string;
  readonly hostname?: string;
  readonly mode: NetworkMode;
  readonly extraHosts?: readonly { ip: string; names: string[] }[];
  readonly dns?: readonly string[];
  readonly dnsSearch?: readonly string[];
  readonly dnsOptions?: readonly string[];
  /** With mode "network": how to connect to it (static IP, aliases, MAC, published ports). */
  readonly connect?: ConnectRequest;
  /** The sandbox of a container of tsnet's runtime (its id): recovery removes it if the container never came. */
  readonly forContainer?: boolean;
  /**
   * Join a namespace another runtime made (a CNI ADD's CNI_NETNS) instead of making one: tsnet writes
   * no hosts or resolv.conf for it (the runtime does) and never removes it. Mode "network" or "none".
   */
  readonly netnsPath?: string;
  /** The CNI attachment the sandbox serves (recorded for DEL, CHECK and GC). */
  readonly cni?: { readonly network: string; readonly containerId: string; readonly ifName: string };
}

/** A port to publish; the container address is the endpoint's (of the host address's family). */
export interface PortRequest {
  readonly proto: PortMapping['proto'];
  /** Undefined: every local address, IPv4 and (on a dual-stack network) IPv6. */
  readonly hostIp?: IpAddr;
  /** Undefined: a free block as long as the container range, from `within` or the kernel's local port range. */
  readonly hostPort?: PortMapping['hostPort'];
  readonly within?: PortMapping['hostPort'];
  readonly containerPort: PortMapping['containerPort'];
}

export interface ConnectRequest {
  readonly ip?: string;
  readonly ip6?: string;
  readonly aliases?: readonly string[];
  readonly mac?: string;
  readonly ports?: readonly PortRequest[];
  /** The interface's name in the sandbox (default: the first free eth<N>). */
  readonly ifName?: string;
}

/**
 * An endpoint of a door that owns the sandbox (Docker's CreateEndpoint): addresses already assigned,
 * the container end of the pair left in the host namespace for the door's engine to move.
 */
export interface CreateDoorEndpointRequest {
  readonly door: 'docker';
  readonly id: string;
  readonly network: string;
  readonly addresses: readonly string[];
  readonly mac?: string;
}

export interface NetworkDetails {
  readonly network: NetworkRecord;
  readonly endpoints: readonly (EndpointRecord & { readonly sandboxName: string })[];
  /** A cluster network's endpoints on the other hosts. */
  readonly remote?: readonly RemoteEndpoint[];
}

/** Where the sandbox's processes must run: its namespace and its files. */
export interface SandboxHandle {
  readonly record: SandboxRecord;
  readonly netns: NetnsRef;
}
