/**
 * Names derived from a CNI attachment, deterministic so that DEL and GC find what ADD made without
 * prevResult, without the netns and without records: the host-side veth, the firewall's network
 * and endpoint owners. Also the `portMappings` capability → firewall mappings. Pure.
 */
import { createHash } from 'node:crypto';
import { TsnetError } from '../../core/errors.js';
import { addrFamily, parseIpAddr, parsePort, parseProto, type EndpointId, type IfName, type IpAddr, type NetworkId } from '../../core/net.js';
import type { PortMapping } from '../../sys/firewall/api.js';

const h = (s: string, n: number): string => createHash('sha256').update(s).digest('hex').slice(0, n);

/** `veth` + 8 hex digits of network/container/ifname (12 characters, like the reference's). */
export function hostVethName(network: string, containerId: string, ifName: string): IfName {
  return `veth${h(`${network}\0${containerId}\0${ifName}`, 8)}` as IfName;
}

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

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

export interface PortSpec {
  readonly hostPort: number;
  readonly containerPort: number;
  readonly protocol: 'tcp' | 'udp' | 'sctp';
  readonly hostIp: IpAddr | undefined;
}

/** `runtimeConfig.portMappings`, validated (each field named on error). */
export function parsePortMappings(config: Readonly<Record<string, unknown>>): PortSpec[] {
  const rc = config['runtimeConfig'];
  const raw = isObj(rc) ? rc['portMappings'] : undefined;
  if (raw === undefined || raw === null) return [];
  const field = 'runtimeConfig.portMappings';
  if (!Array.isArray(raw)) throw new TsnetError('INVALID_CONFIG', `${field}: must be a list`, { details: { field } });
  return raw.map((m: unknown, i) => {
    const f = `${field}[${i}]`;
    if (!isObj(m)) throw new TsnetError('INVALID_CONFIG', `${f}: must be an object`, { details: { field: f } });
    const hostIp = m['hostIP'];
    return {
      hostPort: parsePort(m['hostPort'] as number, `${f}.hostPort`),
      containerPort: parsePort(m['containerPort'] as number, `${f}.containerPort`),
      protocol: parseProto((m['protocol'] ?? 'tcp') as string, `${f}.protocol`),
      hostIp: hostIp === undefined || hostIp === '' ? undefined : parseIpAddr(hostIp as string, `${f}.hostIP`),
    };
  });
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
