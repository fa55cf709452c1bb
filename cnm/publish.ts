/**
 * The one host-port picker of every door (CLI `-p`, the library, Docker's ProgramExternalConnectivity):
 * requested host ports checked against what other endpoints hold and what host processes listen on,
 * host addresses checked to be local, ephemeral ones picked from the kernel's local port range
 * (ports.ts, pure). The host's facts are read once per call, in parallel.
 */
import { addrFamily, prefixAddr, type EndpointId, type Family, type Prefix } from '../core/net.js';
import type { PortMapping } from '../sys/firewall/api.js';
import type { ControllerDeps, PortRequest } from './deps.js';
import { invalid, mappingOf } from './lookup.js';
import type { NetworkRecord } from './model.js';
import { assignHostPorts, type HostBinding } from './ports.js';

export type GrantedPort = PortRequest & { readonly hostPort: PortMapping['hostPort'] };

/**
 * Concrete host ports for the requests: taken ones (other endpoints' mappings, host listeners)
 * refused naming who holds them, ephemeral ones picked, host addresses checked to be local.
 */
export async function grantPorts(deps: ControllerDeps, asks: readonly PortRequest[], net: NetworkRecord, self: EndpointId | undefined): Promise<GrantedPort[]> {
  const [eps, sandboxes, listeners, ephemeral, addrs] = await Promise.all([
    deps.state.endpoints.list(), deps.state.sandboxes.list(), deps.hostPorts.listeners(), deps.hostPorts.ephemeralRange(), deps.netlink(deps.hostNs).listAddrs(),
  ]);
  const nameOf = new Map(sandboxes.map((s) => [s.id as string, s.name]));
  const taken: HostBinding[] = eps
    .filter((e) => e.id !== self)
    .flatMap((e) => e.ports.map(mappingOf).map((m) => ({
      proto: m.proto, ...(m.hostIp !== undefined ? { hostIp: m.hostIp } : {}), family: addrFamily(m.containerIp), hostPort: m.hostPort,
      holder: nameOf.has(e.sandboxId) ? `container ${nameOf.get(e.sandboxId) ?? ''}` : e.door !== undefined ? `a ${e.door} container (endpoint ${e.id.slice(0, 12)})` : `endpoint ${e.id.slice(0, 12)}`,
    })));
  const families = [...new Set(net.subnets.map((s) => addrFamily(s.subnet)))];
  const start = Number.parseInt(deps.randomHex(2), 16);
  return assignHostPorts(asks, { taken, listeners, localAddrs: addrs.map((a) => prefixAddr(a.prefix)), ephemeral, families }, start);
}

/** One mapping per address family the request covers (a host address fixes the family). */
export function mappingsFor(addresses: readonly Prefix[], p: GrantedPort): PortMapping[] {
  const families: Family[] = p.hostIp !== undefined ? [addrFamily(p.hostIp)] : [...new Set(addresses.map((a) => addrFamily(a)))];
  return families.map((fam) => {
    const a = addresses.find((x) => addrFamily(x) === fam);
    if (a === undefined) throw invalid('publish', `host address ${p.hostIp ?? ''} is IPv${fam} but the container has no IPv${fam} address on this network`);
    return { proto: p.proto, ...(p.hostIp !== undefined ? { hostIp: p.hostIp } : {}), hostPort: p.hostPort, containerPort: p.containerPort, containerIp: prefixAddr(a) };
  });
}
