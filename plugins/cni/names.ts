/**
 * Names derived from a CNI attachment, deterministic so that DEL and GC find what ADD made without
 * prevResult, without the netns and without records: the host-side veth, the firewall's network
 * and endpoint owners. Also the `portMappings` capability → firewall mappings. Pure.
 */
import { createHash } from 'node:crypto';
import { addrFamily, parseIpAddr, parseProto, type EndpointId, type IfName, type IpAddr, type NetworkId, type Port } from '../../core/net.js';
import type { PortMapping } from '../../sys/firewall/api.js';
import { goPath } from './go-json.js';
import { parseInput, PortMappingsSchema } from './schema.js';

const h = (s: string, n: number): string => createHash('sha256').update(s).digest('hex').slice(0, n);

/** `veth` + 8 hex digits of network/container/ifname (12 characters, like the reference's). */
export function hostVethName(network: string, containerId: string, ifName: string): IfName {
  return `veth${h(`${network}\0${containerId}\0${ifName}`, 8)}` as IfName;
}

/** The owner-tag scope of CNI networks (drivers/owner.ts): they are named by their configuration. */
export const CNI_SCOPE = 'cni';

const NETWORK_ID = /^[a-z0-9][a-z0-9_.-]{0,100}$/;
/** The firewall owner of a CNI network: `cni-<name>` (lower case; a hash suffix when that changed it). */
export function cniNetworkId(network: string): NetworkId {
  const lower = network.toLowerCase();
  const safe = NETWORK_ID.test(lower) ? lower : lower.replace(/[^a-z0-9_.-]/g, '-').slice(0, 90);
  return (lower === network && safe === lower ? `cni-${lower}` : `cni-${safe}-${h(network, 6)}`) as NetworkId;
}

/** Prefix of every endpoint owner of a network (GC lists the firewall by it). */
export function cniEndpointPrefix(network: string): string {
  return `cni-${h(network, 8)}-`;
}

/** The firewall owner of one attachment's published ports. */
export function cniEndpointId(network: string, containerId: string, ifName: string): EndpointId {
  return `${cniEndpointPrefix(network)}${h(`${containerId}\0${ifName}`, 20)}` as EndpointId;
}

export interface PortSpec {
  readonly hostPort: number;
  readonly containerPort: number;
  readonly protocol: 'tcp' | 'udp' | 'sctp';
  readonly hostIp: IpAddr | undefined;
}

const portMappingsOf = (config: Readonly<Record<string, unknown>>): unknown => goPath(config, ['runtimeConfig', 'portMappings'], 'nullable');

/**
 * `runtimeConfig.portMappings`, validated (each field named on error), with Go's key matching:
 * go-cni (containerd, Kubernetes) sends `{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":""}`.
 */
export function parsePortMappings(config: Readonly<Record<string, unknown>>): PortSpec[] {
  const field = 'runtimeConfig.portMappings';
  const list = parseInput(PortMappingsSchema, portMappingsOf(config), field) ?? [];
  return list.map((m, i) => ({
    hostPort: m.hostPort as Port,
    containerPort: m.containerPort as Port,
    protocol: parseProto(m.protocol ?? 'tcp', `${field}[${i}].protocol`),
    hostIp: m.hostIP === undefined || m.hostIP === '' ? undefined : parseIpAddr(m.hostIP, `${field}[${i}].hostIP`),
  }));
}

/**
 * Whether the runtime passed any port mappings, whatever their shape: DEL removes the attachment's
 * published ports then, and never fails on input (a malformed list still removes what ADD made).
 */
export function mayHavePortMappings(config: Readonly<Record<string, unknown>>): boolean {
  const raw = portMappingsOf(config);
  return raw !== undefined && !(Array.isArray(raw) && raw.length === 0);
}

/** Mappings to each container address of the host address's family (both families when none). */
export function toFirewallMappings(specs: readonly PortSpec[], containerIps: readonly IpAddr[]): PortMapping[] {
  const out: PortMapping[] = [];
  for (const s of specs) {
    const unspecified = s.hostIp === undefined || s.hostIp === '0.0.0.0' || s.hostIp === '::';
    for (const ip of containerIps) {
      if (!unspecified && addrFamily(s.hostIp as IpAddr) !== addrFamily(ip)) continue;
      if (s.hostIp === '0.0.0.0' && addrFamily(ip) === 6) continue;
      if (s.hostIp === '::' && addrFamily(ip) === 4) continue;
      out.push({
        proto: s.protocol,
        ...(unspecified ? {} : { hostIp: s.hostIp as IpAddr }),
        hostPort: { start: s.hostPort, end: s.hostPort } as PortMapping['hostPort'],
        containerIp: ip,
        containerPort: { start: s.containerPort, end: s.containerPort } as PortMapping['containerPort'],
      });
    }
  }
  return out;
}
