/**
 * tsnet-portmap: the chained plugin for the `portMappings` capability, usable after any interface
 * plugin (the reference `bridge` included). Each mapping becomes an element of tsnet's nft DNAT maps
 * (one `nft -f` per ADD, O(1) per packet, no per-container chains), owned by the attachment, so DEL
 * and GC remove exactly that attachment's elements. prevResult is passed through unchanged.
 *
 * After a bridge that is not a tsnet network (the reference `bridge` plugin), nothing else makes
 * 127.0.0.1 and hairpin work, so the attachment also owns what the reference portmap does for them:
 * route_localnet on the bridge, and masquerade of DNATed flows to the container from 127.0.0.0/8
 * and from its own subnets (the firewall's `foreignBridge`; matched by conntrack's DNAT state, as
 * the reference portmap matches its mark). After tsnet-bridge these repeat what the network's own
 * rules do, harmlessly.
 *
 * Configuration: `firewallBackend` (nftables, iptables or none), runtimeConfig.portMappings.
 */
import { TsnetError } from '../../core/errors.js';
import { addrFamily, parseIfName, parseIpAddr, parsePrefix, prefixNetwork, type IpAddr, type Prefix } from '../../core/net.js';
import { teardownAll } from '../../core/teardown.js';
import type { CniDeps } from './deps.js';
import { cniEndpointId, cniEndpointPrefix, cniNetworkId, parsePortMappings, toFirewallMappings } from './names.js';
import type { Plugin, Request } from './skel.js';
import { goField } from './go-json.js';
import { fromWire, type Result } from './spec.js';

/** The configured backend's name (deps.firewall validates it). */
function backend(req: Request): string {
  const fw = goField(req.config, 'firewallBackend') ?? 'nftables';
  if (typeof fw !== 'string') throw new TsnetError('INVALID_CONFIG', 'firewallBackend: must be a string', { details: { field: 'firewallBackend' } });
  return fw;
}

function needPrev(req: Request): Result {
  const p = goField(req.config, 'prevResult', 'nullable');
  if (p === undefined) throw new TsnetError('INVALID_CONFIG', 'prevResult: missing (tsnet-portmap is a chained plugin: put it after an interface plugin)', { details: { field: 'prevResult' } });
  return fromWire(p);
}

/** The container's addresses: those on interfaces inside a sandbox (all of them if none says). */
function containerIps(prev: Result): IpAddr[] {
  const ifs = prev.interfaces ?? [];
  return (prev.ips ?? [])
    .filter((ip) => ip.interface === undefined || ifs[ip.interface]?.sandbox !== undefined)
    .map((ip, i) => parseIpAddr(ip.address.split('/')[0] ?? '', `prevResult.ips[${i}].address`));
}

/** The subnets of the container's addresses (`10.22.0.5/16` → `10.22.0.0/16`). */
function containerSubnets(prev: Result): Prefix[] {
  const ifs = prev.interfaces ?? [];
  const out: Prefix[] = [];
  (prev.ips ?? []).forEach((ip, i) => {
    if (ip.interface !== undefined && ifs[ip.interface]?.sandbox === undefined) return;
    const net = prefixNetwork(parsePrefix(ip.address, `prevResult.ips[${i}].address`));
    if (!out.includes(net)) out.push(net);
  });
  return out;
}

export function createPortmapPlugin(deps: CniDeps): Plugin {
  const log = deps.log.child({ plugin: 'tsnet-portmap' });
  const ep = (req: Request): ReturnType<typeof cniEndpointId> => cniEndpointId(req.name, req.containerId, req.ifName);
  return {
    async add(req) {
      const fw = backend(req);
      const prev = needPrev(req);
      const mappings = toFirewallMappings(parsePortMappings(req.config), containerIps(prev));
      if (mappings.length === 0) return prev;
      const hostIf = parseIfName((prev.interfaces ?? []).find((i) => i.sandbox === undefined)?.name ?? 'lo', 'prevResult.interfaces[0].name');
      // 127.0.0.1 publishing: the DNATed packet leaves through the bridge with a loopback source.
      if (hostIf !== 'lo' && mappings.some((m) => addrFamily(m.containerIp) === 4)) {
        await deps.sysctl(deps.hostNs).set({ [`net.ipv4.conf.${hostIf.replaceAll('.', '/')}.route_localnet`]: 1 });
      }
      // With no host-side interface in the result there is no bridge to hairpin through.
      const foreignBridge = hostIf === 'lo' ? {} : { foreignBridge: { subnets: containerSubnets(prev) } };
      await deps.firewall(fw).ensurePorts({ endpointId: ep(req), networkId: cniNetworkId(req.name), bridge: hostIf, mappings, ...foreignBridge });
      log.info('ports published', { container: req.containerId, mappings: mappings.length });
      return prev;
    },
    async del(req) {
      // The attachment's ports, whatever the shape of the runtime's port mappings: DEL never fails on its input.
      await deps.firewall(backend(req)).removePorts(ep(req));
    },
    async check(req) {
      const prev = needPrev(req);
      const mappings = toFirewallMappings(parsePortMappings(req.config), containerIps(prev));
      if (mappings.length === 0) return;
      const { endpoints } = await deps.firewall(backend(req)).list();
      if (!endpoints.includes(ep(req))) throw new TsnetError('NOT_FOUND', `published ports of ${req.containerId}/${req.ifName} are missing`, { details: { field: 'runtimeConfig.portMappings' } });
    },
    async status(req) {
      deps.firewall(backend(req));
    },
    async gc(req, valid) {
      const fw = deps.firewall(backend(req));
      const keep = new Set<string>(valid.map((a) => cniEndpointId(req.name, a.containerId, a.ifName)));
      const prefix = cniEndpointPrefix(req.name);
      const stale = (await fw.list()).endpoints.filter((e) => e.startsWith(prefix) && !keep.has(e));
      await teardownAll(stale.map((e) => ({ label: `ports ${e}`, run: () => fw.removePorts(e) })));
    },
  };
}
