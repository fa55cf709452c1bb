/**
 * The firewall port: drivers state INTENT here (this network masquerades, is internal, isolates
 * its containers; this endpoint publishes these ports) and never spell a rule. `plan.ts` turns
 * intent into a backend-neutral rule list (pure, golden-tested); the backends (`nftables.ts`,
 * `iptables.ts`, `none.ts`) serialize that list and apply it in one batch per call.
 *
 * Every instance is bound to one network namespace when it is created. Ownership lives in the
 * kernel: every rule or map element carries its owner (network id or endpoint id), so `remove*`
 * and `list` read the kernel, never the caller's memory, and several processes (CNI plugins) may
 * use the same namespace at the same time.
 */
import type { Logger } from '../../core/log.js';
import type { EndpointId, IfName, IpAddr, NetnsRef, NetworkId, Port, Prefix, Proto } from '../../core/net.js';
import type { Argv, RunOptions, RunResult } from '../exec.js';

export type FirewallBackend = 'nftables' | 'iptables' | 'none';
export const FIREWALL_BACKENDS = ['nftables', 'iptables', 'none'] as const satisfies readonly FirewallBackend[];

/** An inclusive port range; a single port has start === end. */
export interface PortRange {
  readonly start: Port;
  readonly end: Port;
}

/** What a network needs from the firewall. Re-applying replaces that network's rules. */
export interface NetworkPolicy {
  readonly networkId: NetworkId;
  /** The bridge the network's containers hang off. One bridge belongs to one network. */
  readonly bridge: IfName;
  /** The network's subnets (IPv4 and/or IPv6). Host bits are ignored. */
  readonly subnets: readonly Prefix[];
  /** Masquerade traffic from the subnets leaving through any other interface. */
  readonly masquerade: boolean;
  /** No egress and no ingress except within the bridge (no masquerade, no published ports). */
  readonly internal: boolean;
  /** Inter-container communication through the host (bridge to same bridge); false drops it. */
  readonly icc: boolean;
}

/**
 * One published port or port range.
 * - `8080:80`: hostPort {8080,8080} → containerPort {80,80}
 * - `8000-8100:8000-8100`: same range, one map element / one rule
 * - `8000-8100:80`: N:1, every host port of the range goes to container port 80
 * - `8000-8100:9000-9100`: shifted; iptables does it in one rule (DNAT port offset); nftables 1.0.6
 *   has no syntax for a NAT port offset, so that backend stores one map element per port.
 */
export interface PortMapping {
  readonly proto: Proto;
  /**
   * The host address the port is published on; undefined (or 0.0.0.0 / ::) = every local address
   * of the container address's family. 127.0.0.1 works for connections from the host itself only
   * if `net.ipv4.conf.<bridge>.route_localnet=1` (set by the caller); ::1 cannot be DNATed by Linux
   * and is rejected.
   */
  readonly hostIp?: IpAddr;
  readonly hostPort: PortRange;
  readonly containerIp: IpAddr;
  /** Same length as hostPort, or a single port for an N:1 range. */
  readonly containerPort: PortRange;
}

/** The ports one endpoint publishes. */
export interface EndpointPorts {
  readonly endpointId: EndpointId;
  readonly networkId: NetworkId;
  readonly bridge: IfName;
  readonly mappings: readonly PortMapping[];
  /**
   * The bridge is not one of tsnet's networks (tsnet-portmap after the reference `bridge` CNI
   * plugin), so no network's rules masquerade this endpoint's 127.0.0.1 and hairpin flows: the
   * endpoint owns those masquerades itself, for DNATed flows from 127.0.0.0/8 and from `subnets`
   * (the container's own subnets). The caller sets route_localnet on the bridge.
   */
  readonly foreignBridge?: { readonly subnets: readonly Prefix[] };
}

export interface FirewallCallOptions {
  readonly signal?: AbortSignal;
}

export interface RemovePortsOptions extends FirewallCallOptions {
  readonly published?: EndpointPorts;
}

export interface FirewallListing {
  /** Networks with rules in the kernel, sorted. */
  readonly networks: NetworkId[];
  /** Endpoints with published ports in the kernel, sorted. */
  readonly endpoints: EndpointId[];
  /**
   * Networks whose traffic another firewall on the host drops because tsnet's let-through rules in
   * that firewall's chains are missing (Docker's DOCKER-USER, or FORWARD under a drop policy set
   * after the network was made, or rules someone deleted); sorted, present only when not empty.
   * ensureNetwork puts them back.
   */
  readonly blocked?: NetworkId[];
}

export interface Firewall {
  readonly backend: FirewallBackend;
  /**
   * Creates or replaces the network's rules (idempotent), and lets its bridge through the host's
   * other firewalls where they would drop its traffic (Docker's DOCKER-USER or a dropping iptables
   * FORWARD chain: host-chains.ts; firewalld's zones: firewalld.ts). INVALID_CONFIG for bad input
   * (nothing applied); ALREADY_EXISTS if the bridge or a subnet belongs to another network.
   */
  ensureNetwork(p: NetworkPolicy, opts?: FirewallCallOptions): Promise<void>;
  /** Removes everything the network owns, in other firewalls too; succeeds if there is nothing. */
  removeNetwork(id: NetworkId, opts?: FirewallCallOptions): Promise<void>;
  /**
   * Publishes the endpoint's mappings. Additive and idempotent: mappings already present with the
   * same owner and target are left alone. A host port (same family, proto, host address, shape)
   * already mapped elsewhere or by another endpoint is ALREADY_EXISTS, and nothing is applied. To
   * change an endpoint's mappings, removePorts then ensurePorts. The cost does not grow with the
   * number of mappings already published (nftables).
   */
  ensurePorts(p: EndpointPorts, opts?: FirewallCallOptions): Promise<void>;
  /**
   * Removes every mapping the endpoint owns, found in the kernel by owner; succeeds if none. With
   * `published` (what ensurePorts was given for it, from the endpoint's record), those mappings are
   * looked up by key and removed if they are all still the endpoint's (nftables: O(1), not a read of
   * every published port); otherwise, or if it finds less, the full search by owner.
   */
  removePorts(id: EndpointId, opts?: RemovePortsOptions): Promise<void>;
  /** What tsnet owns, read from the kernel. */
  list(opts?: FirewallCallOptions): Promise<FirewallListing>;
  /** Drops everything tsnet owns (never the contents of the iptables user chain). */
  removeAll(opts?: FirewallCallOptions): Promise<void>;
}

/** How a backend starts processes: `run` from sys/exec.ts, or a fake in tests. */
export type FirewallExec = (argv: Argv, opts: RunOptions) => Promise<RunResult>;

export interface FirewallDeps {
  /** The namespace every command runs in. */
  readonly netns: NetnsRef;
  readonly log?: Logger;
  /** Defaults to sys/exec.ts `run`; tests inject failing fakes. */
  readonly exec?: FirewallExec;
  /**
   * The owner name: nft table name, iptables chain prefix (upper-cased) and comment prefix.
   * Default "tsnet". Lowercase letter, then up to 11 lowercase letters, digits or '_'.
   */
  readonly name?: string;
  /**
   * The D-Bus system bus address (DBUS_SYSTEM_BUS_ADDRESS, read by the composition root), where
   * firewalld is looked for; default unix:path=/run/dbus/system_bus_socket.
   */
  readonly systemBus?: string;
}

/** A watch on the kernel's ruleset (monitor.ts): rules, chains, sets or tables taken away. */
export interface RulesetMonitor {
  close(): Promise<void>;
}

export interface RulesetWatchOptions {
  /** Called once per quiet period after something that can hold tsnet's rules went away. */
  readonly onLoss: () => void;
  readonly debounceMs?: number;
  readonly log?: Logger;
}

/** Starts a watch in the namespace the function is bound to. */
export type WatchRuleset = (opts: RulesetWatchOptions) => RulesetMonitor;
