/**
 * tsnet-bridge with `tsnetNetwork`: the CNI attachment joins a network of tsnet's controller (any
 * driver with a data path: bridge, macvlan, overlay) instead of a network of its own. This is the
 * Kubernetes pod network across nodes: with an overlay network (`tsnet network create -d overlay
 * --subnet 10.244.0.0/16 pods` on any host of the cluster) every node's pods take addresses from
 * the blocks cluster IPAM leases to that node (no store round trip per pod in the common case) and
 * reach the pods of every other node at L2 over VXLAN, without NAT; the node reaches its own pods
 * through the network's gateway on its bridge (kubelet's probes).
 *
 *   {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tsnet-bridge", "tsnetNetwork": "pods",
 *    "capabilities": {"portMappings": true, "aliases": true}}
 *
 * Served only by the node's daemon (`tsnet daemon`, whose controller holds the cluster's agent and
 * the DNS): the C front end hands it the request; without a daemon the plugin answers CNI error 11
 * (try again later), as kubelet and containerd retry. Each attachment (network name, container id,
 * interface) is one CNM sandbox on the runtime's namespace (`netns.kind: external`, never made or
 * removed by tsnet) with one endpoint named CNI_IFNAME, so the network's inspect, DNS, isolation,
 * published ports (`portMappings`), static addresses (`ips`, CNI_ARGS IP) and the cluster's view
 * are those of every other endpoint. DEL removes the sandbox (idempotent, also when the namespace
 * is gone), CHECK compares the kernel with the record, GC removes the attachments of this
 * configuration that the runtime no longer lists.
 */
import { createHash } from 'node:crypto';
import { TsnetError, isCode } from '../../core/errors.js';
import { parseIfName, prefixNetwork, type IfName, type NetnsRef } from '../../core/net.js';
import type { Controller, PortRequest } from '../../cnm/controller.js';
import type { EndpointRecord, NetworkRecord, SandboxRecord } from '../../cnm/model.js';
import { checkName, isHostname, isName, networkHasDns } from '../../cnm/names.js';
import type { CniDeps } from './deps.js';
import { CNI_ERR, CniError } from './errors.js';
import { goField, goPath } from './go-json.js';
import { parseAliases } from './dns.js';
import { requestedIps } from './ipam.js';
import { parsePortMappings } from './names.js';
import type { Attachment, Plugin, Request } from './skel.js';
import type { Interface, Result } from './spec.js';

/** The conf key that turns this on. */
export const NETWORK_KEY = 'tsnetNetwork';

/** The tsnet network a configuration names, or undefined when it names none. */
export function attachedNetwork(config: Readonly<Record<string, unknown>>): string | undefined {
  const v = goField(config, NETWORK_KEY);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new TsnetError('INVALID_CONFIG', `${NETWORK_KEY}: must be the name or id of a tsnet network, got ${JSON.stringify(v)}`, { details: { field: NETWORK_KEY } });
  return checkName(v, NETWORK_KEY);
}

/** The CNM sandbox id of one attachment: deterministic, so DEL finds it without a cache or prevResult. */
export function attachmentSandboxId(network: string, containerId: string, ifName: string): string {
  return createHash('sha256').update(`tsnet-cni\0${network}\0${containerId}\0${ifName}`).digest('hex');
}

/** The ports asked for (`portMappings`), as the controller's requests. */
export function portRequestsOf(config: Readonly<Record<string, unknown>>): PortRequest[] {
  return parsePortMappings(config).map((m) => ({
    proto: m.protocol,
    ...(m.hostIp !== undefined ? { hostIp: m.hostIp } : {}), // 0.0.0.0 / :: : every local address of that family (the port picker's rule)
    hostPort: { start: m.hostPort, end: m.hostPort } as NonNullable<PortRequest['hostPort']>,
    containerPort: { start: m.containerPort, end: m.containerPort } as PortRequest['containerPort'],
  }));
}

export function createNetworkAttach(deps: CniDeps): Plugin {
  const log = deps.log.child({ plugin: 'tsnet-bridge', mode: NETWORK_KEY });

  async function controller(): Promise<Controller> {
    if (deps.controller === undefined) {
      throw new CniError(CNI_ERR.TRY_AGAIN, `${NETWORK_KEY}: attaching to a tsnet network is served by the node's tsnet daemon, and none answers on this node (start it: tsnet daemon)`, 'try again later');
    }
    return deps.controller();
  }

  const findAttachment = async (ctl: Controller, id: string): Promise<SandboxRecord | undefined> =>
    ctl.findSandbox(id).then((sb) => (sb.id === id ? sb : undefined), (err: unknown) => (isCode(err, 'NOT_FOUND') ? undefined : Promise.reject(err)));

  function resultOf(sb: SandboxRecord, ep: EndpointRecord, net: NetworkRecord, netnsPath: string): Result {
    const mtu = typeof net.config['mtu'] === 'number' ? { mtu: net.config['mtu'] } : {};
    const interfaces: Interface[] = [
      ...(ep.hostIf !== undefined ? [{ name: ep.hostIf, ...mtu }] : []),
      { name: ep.ifName, ...(ep.mac !== undefined ? { mac: ep.mac } : {}), sandbox: netnsPath, ...mtu },
    ];
    const at = interfaces.length - 1;
    const gateways = new Map(net.subnets.map((s) => [s.subnet as string, s.gateway as string]));
    const ips = ep.addresses.map((a) => {
      const gw = gateways.get(prefixNetwork(a));
      return { address: a as string, ...(gw !== undefined ? { gateway: gw } : {}), interface: at };
    });
    const routes = ep.defaultRoute
      ? ips.filter((i) => i.gateway !== undefined).map((i) => ({ dst: i.address.includes(':') ? '::/0' : '0.0.0.0/0', gw: i.gateway as string }))
      : [];
    // The embedded resolver answers on the gateway (the runtime may use it; Kubernetes points pods at its cluster DNS).
    const v4gw = net.subnets.find((s) => !s.subnet.includes(':'))?.gateway;
    const dns = networkHasDns(net) && v4gw !== undefined ? { nameservers: [v4gw as string], ...(sb.dnsSearch.length > 0 ? { search: [...sb.dnsSearch] } : {}) } : undefined;
    return { interfaces, ips, routes, ...(dns !== undefined ? { dns } : {}) };
  }

  async function add(req: Request): Promise<Result> {
    const network = attachedNetwork(req.config) as string;
    const netnsPath = req.netns as string;
    if (goField(req.config, 'ipam') !== undefined) throw new TsnetError('INVALID_CONFIG', `ipam: not used with ${NETWORK_KEY}: addresses come from network ${network}'s own IPAM; remove the ipam section`, { details: { field: 'ipam' } });
    // Validated before anything is asked of the daemon's controller.
    const ports = portRequestsOf(req.config);
    const ips = requestedIps(req.config, req.args);
    const aliases = parseAliases(req.config, req.name) ?? [];
    const macRaw = goPath(req.config, ['runtimeConfig', 'mac']) ?? req.args.get('MAC');
    const podName = req.args.get('K8S_POD_NAME');
    const ifName = parseIfName(req.ifName, 'CNI_IFNAME');
    if (!(await deps.isNetns(netnsPath))) throw new CniError(CNI_ERR.INVALID_ENV, `CNI_NETNS: ${netnsPath} is not a network namespace`, 'invalid environment variable CNI_NETNS');
    const ctl = await controller();
    const id = attachmentSandboxId(req.name, req.containerId, req.ifName);
    const have = await findAttachment(ctl, id);
    if (have !== undefined) {
      // ADD again for the same attachment: the same answer when it is intact, else made anew.
      const eps = await ctl.endpointsOf(have.id);
      const ep = eps.find((e) => e.ifName === ifName && e.status === 'ready');
      if (have.netns.kind === 'external' && have.netns.path === netnsPath && have.status === 'ready' && ep !== undefined) {
        return resultOf(have, ep, await ctl.findNetwork(ep.networkId), netnsPath);
      }
      await ctl.deleteSandbox(id);
    }
    const v4 = ips.filter((a) => !a.includes(':'));
    const v6 = ips.filter((a) => a.includes(':'));
    if (v4.length > 1 || v6.length > 1) throw new TsnetError('INVALID_CONFIG', `runtimeConfig.ips: at most one address per family, got ${ips.join(', ')}`, { details: { field: 'runtimeConfig.ips' } });
    const names = [...(podName !== undefined && isName(podName) ? [podName] : []), ...aliases.filter((a) => a !== podName && isName(a))];
    const handle = await ctl.createSandbox({
      id, name: `cni-${id.slice(0, 12)}`,
      ...(podName !== undefined && podName.length <= 63 && isHostname(podName) ? { hostname: podName } : {}),
      mode: { kind: 'network', network },
      netnsPath,
      cni: { network: req.name, containerId: req.containerId, ifName },
      connect: {
        ifName,
        ...(v4[0] !== undefined ? { ip: v4[0] } : {}),
        ...(v6[0] !== undefined ? { ip6: v6[0] } : {}),
        ...(typeof macRaw === 'string' && macRaw !== '' ? { mac: macRaw.toLowerCase() } : {}),
        ...(names.length > 0 ? { aliases: names } : {}),
        ...(ports.length > 0 ? { ports } : {}),
      },
    });
    const ep = (await ctl.endpointsOf(handle.record.id)).find((e) => e.ifName === ifName);
    if (ep === undefined) throw new TsnetError('INTERNAL', `attachment ${req.containerId}/${req.ifName}: no endpoint after the join`);
    const net = await ctl.findNetwork(ep.networkId);
    log.info('added', { container: req.containerId, ifName, network: net.name, addresses: ep.addresses });
    return resultOf(handle.record, ep, net, netnsPath);
  }

  async function del(req: Request): Promise<void> {
    const ctl = await controller();
    await ctl.deleteSandbox(attachmentSandboxId(req.name, req.containerId, req.ifName)).catch((err: unknown) => {
      if (!isCode(err, 'NOT_FOUND')) throw err;
    });
  }

  async function check(req: Request): Promise<void> {
    const ctl = await controller();
    const sb = await findAttachment(ctl, attachmentSandboxId(req.name, req.containerId, req.ifName));
    if (sb === undefined || sb.status !== 'ready') throw new TsnetError('NOT_FOUND', `attachment ${req.containerId}/${req.ifName} of ${req.name}: tsnet has no record of it`);
    const netnsPath = req.netns as string;
    if (sb.netns.kind !== 'external' || sb.netns.path !== netnsPath) throw new TsnetError('NOT_FOUND', `attachment ${req.containerId}/${req.ifName}: recorded for another namespace`, { details: { field: 'CNI_NETNS' } });
    const ep = (await ctl.endpointsOf(sb.id)).find((e) => e.ifName === req.ifName);
    if (ep === undefined) throw new TsnetError('NOT_FOUND', `attachment ${req.containerId}/${req.ifName}: no endpoint`);
    const ns: NetnsRef = { kind: 'path', path: netnsPath };
    const link = await deps.netlink(ns).getLink(req.ifName as IfName);
    if (link === undefined) throw new TsnetError('NOT_FOUND', `${req.ifName} is missing from ${netnsPath}`, { details: { field: 'CNI_IFNAME' } });
    const have = new Set((await deps.netlink(ns).listAddrs(req.ifName as IfName)).map((a) => a.prefix as string));
    const missing = ep.addresses.filter((a) => !have.has(a));
    if (missing.length > 0) throw new TsnetError('NOT_FOUND', `${req.ifName} in ${netnsPath} lacks ${missing.join(', ')}`, { details: { field: 'CNI_IFNAME' } });
    if (ep.hostIf !== undefined && (await deps.netlink(deps.hostNs).getLink(ep.hostIf)) === undefined) {
      throw new TsnetError('NOT_FOUND', `the host end ${ep.hostIf} of ${req.containerId}/${req.ifName} is missing`);
    }
  }

  async function status(req: Request): Promise<void> {
    const ctl = await controller();
    await ctl.findNetwork(attachedNetwork(req.config) as string);
  }

  async function gc(req: Request, valid: readonly Attachment[]): Promise<void> {
    const ctl = await controller();
    const keep = new Set(valid.map((a) => attachmentSandboxId(req.name, a.containerId, a.ifName)));
    const stale = (await ctl.listSandboxes()).filter((sb) => sb.cni?.network === req.name && !keep.has(sb.id));
    const failed: string[] = [];
    for (const sb of stale) {
      await ctl.deleteSandbox(sb.id).catch((err: unknown) => {
        if (!isCode(err, 'NOT_FOUND')) failed.push(`${sb.cni?.containerId ?? sb.id}: ${err instanceof Error ? err.message : String(err)}`);
      });
    }
    if (stale.length > 0) log.info('gc removed attachments', { network: req.name, removed: stale.length - failed.length });
    if (failed.length > 0) throw new TsnetError('INTERNAL', `gc: ${failed.join('; ')}`);
  }

  return { add, del, check, status, gc };
}
