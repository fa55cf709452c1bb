/**
 * The resolver's view of the CNM records (pure): DNS-enabled networks with their gateways, and
 * every ready endpoint on them with its names. The records are the one source of truth, so every
 * way in (CLI, CNI plugins, Docker plugin) gets DNS by writing records and notifying the daemon.
 */
import { prefixAddr } from '../core/net.js';
import type { DnsEndpointInput, DnsNetworkInput } from '../dns/api.js';
import { networkHasDns, type EndpointRecord, type NetworkRecord, type SandboxRecord } from './model.js';

export function dnsInputs(
  networks: readonly NetworkRecord[],
  endpoints: readonly EndpointRecord[],
  sandboxes: readonly SandboxRecord[],
): { networks: DnsNetworkInput[]; endpoints: DnsEndpointInput[] } {
  const nets = networks.filter((n) => n.status === 'ready' && networkHasDns(n));
  const ids = new Set<string>(nets.map((n) => n.id));
  const byId = new Map(sandboxes.map((s) => [s.id as string, s]));
  const eps: DnsEndpointInput[] = [];
  for (const e of endpoints) {
    const sb = byId.get(e.sandboxId);
    if (e.status !== 'ready' || !ids.has(e.networkId) || sb === undefined) continue;
    // Docker's order: container name, then hostname, network aliases, the short id.
    eps.push({ networkId: e.networkId, sandboxId: sb.id, addresses: e.addresses.map(prefixAddr), names: [sb.name, sb.hostname, ...e.aliases, sb.id.slice(0, 12)] });
  }
  return {
    networks: nets.map((n) => ({ id: n.id, name: n.name, internal: n.internal, subnets: n.subnets.map((s) => s.subnet), gateways: n.subnets.map((s) => s.gateway) })),
    endpoints: eps,
  };
}

/** The resolver address written into a container's resolv.conf on `n`: its first IPv4 gateway (else IPv6). */
export function resolverAddress(n: NetworkRecord): NetworkRecord['subnets'][number]['gateway'] | undefined {
  if (!networkHasDns(n)) return undefined;
  return (n.subnets.find((s) => !s.gateway.includes(':')) ?? n.subnets[0])?.gateway;
}
