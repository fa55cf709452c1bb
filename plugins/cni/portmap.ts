/**
 * tsnet-portmap: the chained plugin for the `portMappings` capability, usable after any interface
 * plugin (the reference `bridge` included). Each mapping becomes an element of tsnet's nft DNAT maps
 * (one `nft -f` per ADD, O(1) per packet, no per-container chains), owned by the attachment, so DEL
 * and GC remove exactly that attachment's elements. prevResult is passed through unchanged.
 *
 * Configuration: `firewallBackend` (nftables, iptables or none), runtimeConfig.portMappings.
 */
import { TsnetError } from '../../core/errors.js';
import { parseIfName, parseIpAddr, type IpAddr } from '../../core/net.js';
import { teardownAll } from '../../core/teardown.js';
import type { CniDeps } from './deps.js';
import { cniEndpointId, cniEndpointPrefix, cniNetworkId, parsePortMappings, toFirewallMappings } from './names.js';
import type { Plugin, Request } from './skel.js';
import { fromWire, type Result } from './spec.js';

/** The configured backend's name (deps.firewall validates it). */
function backend(req: Request): string {
  const fw = req.config['firewallBackend'] ?? 'nftables';
  if (typeof fw !== 'string') throw new TsnetError('INVALID_CONFIG', 'firewallBackend: must be a string', { details: { field: 'firewallBackend' } });
  return fw;
}

function needPrev(req: Request): Result {
  const p = req.config['prevResult'];
  if (p === undefined || p === null) throw new TsnetError('INVALID_CONFIG', 'prevResult: missing (tsnet-portmap is a chained plugin: put it after an interface plugin)', { details: { field: 'prevResult' } });
  return fromWire(p);
}

/** The container's addresses: those on interfaces inside a sandbox (all of them if none says). */
function containerIps(prev: Result): IpAddr[] {
  const ifs = prev.interfaces ?? [];
  return (prev.ips ?? [])
    .filter((ip) => ip.interface === undefined || ifs[ip.interface]?.sandbox !== undefined)
    .map((ip, i) => parseIpAddr(ip.address.split('/')[0] ?? '', `prevResult.ips[${i}].address`));
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
      const hostIf = (prev.interfaces ?? []).find((i) => i.sandbox === undefined)?.name ?? 'lo';
      await deps.firewall(fw).ensurePorts({ endpointId: ep(req), networkId: cniNetworkId(req.name), bridge: parseIfName(hostIf, 'prevResult.interfaces[0].name'), mappings });
      log.info('ports published', { container: req.containerId, mappings: mappings.length });
      return prev;
    },
    async del(req) {
      parsePortMappings(req.config);
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
