/**
 * The resolver's view of the CNM records (pure): DNS-enabled networks with their gateways, and
 * every ready endpoint on them with its names. The records are the one source of truth, so every
 * way in (CLI, CNI plugins, Docker plugin) gets DNS by writing records and notifying the daemon.
 *
 * CNI attachments (tsnet-bridge with tsnet's DNS on; sys/store/cni-attachments.ts) carry their
 * network with them: each CNI network becomes a DNS network (never internal: forwarding as for a
 * tsnet bridge network) whose gateways and subnets are those of its attachments' records, and each
 * attachment an endpoint of its own sandbox (`cni:<container id>`), so it sees the names of the
 * attachments on the networks it is on, and nothing of the others.
 */
import { prefixAddr } from '../core/net.js';
import type { DnsEndpointInput, DnsNetworkInput } from '../dns/api.js';
import type { CniAttachmentRecord } from '../sys/store/api.js';
import type { RemoteEndpoint } from './deps.js';
import { networkHasDns, type EndpointRecord, type NetworkRecord, type SandboxRecord } from './model.js';

export function dnsInputs(
  networks: readonly NetworkRecord[],
  endpoints: readonly EndpointRecord[],
  sandboxes: readonly SandboxRecord[],
  cni: readonly CniAttachmentRecord[] = [],
  remote: readonly RemoteEndpoint[] = [],
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
  // Endpoints of the other hosts on cluster networks (from the agent's watch): names only, never clients here.
  for (const r of remote) {
    if (ids.has(r.networkId)) eps.push({ networkId: r.networkId, sandboxId: `remote:${r.endpointId}`, addresses: [r.ip], names: r.names });
  }
  const cniNets = new Map<string, DnsNetworkInput & { subnets: DnsNetworkInput['subnets'][number][]; gateways: DnsNetworkInput['gateways'][number][] }>();
  for (const a of cni) {
    if (ids.has(a.networkId)) continue; // a CNM network's id: never merged into it
    const n = cniNets.get(a.networkId) ?? { id: a.networkId, name: a.network, internal: false, subnets: [], gateways: [] };
    for (const s of a.subnets) if (!n.subnets.includes(s)) n.subnets.push(s);
    for (const g of a.gateways) if (!n.gateways.includes(g)) n.gateways.push(g);
    cniNets.set(a.networkId, n);
    eps.push({ networkId: a.networkId, sandboxId: `cni:${a.containerId}`, addresses: a.addresses, names: a.names });
  }
  return {
    networks: [
      ...nets.map((n) => ({ id: n.id, name: n.name, internal: n.internal, subnets: n.subnets.map((s) => s.subnet), gateways: n.subnets.map((s) => s.gateway) })),
      ...cniNets.values(),
    ],
    endpoints: eps,
  };
}

/** The resolver address written into a container's resolv.conf on `n`: its first IPv4 gateway (else IPv6). */
export function resolverAddress(n: NetworkRecord): NetworkRecord['subnets'][number]['gateway'] | undefined {
  if (!networkHasDns(n)) return undefined;
  return (n.subnets.find((s) => !s.gateway.includes(':')) ?? n.subnets[0])?.gateway;
}
