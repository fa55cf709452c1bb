/**
 * tsnet-bridge: the interface plugin. One process does what the reference chain needs bridge +
 * host-local + portmap for: a veth pair (the container end created directly in CNI_NETNS under its
 * final name) into a Linux bridge, the gateway on the bridge, masquerade and isolation between
 * networks stated as intent to sys/firewall, IPAM built in (host-local-compatible, in process) or
 * delegated to the plugin named in `ipam.type`, and `runtimeConfig.portMappings` as nft map
 * elements.
 *
 * Configuration (the reference bridge's keys and defaults where they exist; unknown keys are
 * ignored, as CNI configurations are shared by the plugins of a list):
 *   bridge ("cni0"), isGateway (false), isDefaultGateway (false; implies isGateway), ipMasq
 *   (false), mtu, hairpinMode (false), icc (true: containers of the network reach each other),
 *   firewallBackend (nftables, iptables or none; default nftables), ipam (required), dns.
 *
 * tsnet's embedded DNS (plugins/cni/dns.ts): keys tsnetDns (boolean), tsnetStateDir, tsnetRunDir
 * (default TSNET_STATE_DIR / TSNET_RUN_DIR of the plugin's environment, else /var/lib/tsnet and
 * /run/tsnet). Like a Podman network with dnsname in its list, DNS is on when the configuration
 * declares the `aliases` capability (or the runtime passes `runtimeConfig.aliases`), unless
 * `tsnetDns` says otherwise; it needs isGateway. ADD then registers the attachment (names: the
 * container name from CNI_ARGS K8S_POD_NAME, the aliases of this network, the short container id)
 * in tsnet's state directory and has the daemon (`tsnet daemon`, which must run, as dnsname needs
 * dnsmasq; the plugin does not start it) reload: neighbours on the same network resolve those names
 * through the gateway, and the result's dns.nameservers names the gateway first, so the runtime
 * points the container's resolv.conf at it. When no daemon runs, the record is still written (it
 * is served once one starts) but the gateway is not named. DEL and GC remove records.
 *
 * The network (bridge, gateway addresses, sysctls, firewall rules) is set up when an ADD finds the
 * bridge missing, under a cross-process lock; later ADDs only make sure the gateway address is
 * there (same ip process, no extra cost). CHECK reports missing firewall rules.
 */
import { TsnetError } from '../../core/errors.js';
import {
  parseIfName, parseIpAddr, parseMac, parsePrefix, prefixAddr, prefixNetwork,
  type EndpointId, type IfName, type IpAddr, type MacAddr, type NetnsRef, type NetworkId, type Prefix,
} from '../../core/net.js';
import { teardownAll } from '../../core/teardown.js';
import { UndoStack } from '../../core/undo.js';
import type { JoinRequest, NetworkDriver, NetworkSpec, PublishRequest, SubnetAssignment } from '../../drivers/api.js';
import { makeBridgeConfig, type BridgeConfig } from '../../drivers/bridge/config.js';
import { createBridgeDriver } from '../../drivers/bridge/index.js';
import { formatOwnerTag } from '../../drivers/owner.js';
import type { Shape } from '../../sys/api.js';
import type { RouteSpec } from '../../sys/netlink/api.js';
import type { CniDeps } from './deps.js';
import { CNI_ERR, CniError } from './errors.js';
import { addressFlow, BUILTIN_IPAM, parseIpamSection, type IpamSection } from './addresses.js';
import { goField, goPath } from './go-json.js';
import { BandwidthSchema, BridgeConfShape, DnsCapabilitySchema, parseInput } from './schema.js';
import { CNI_SCOPE, cniEndpointId, cniEndpointPrefix, cniNetworkId, hostVethName, mayHavePortMappings, parsePortMappings, toFirewallMappings } from './names.js';
import type { Attachment, Plugin, Request } from './skel.js';
import { fromWire, parseDns, type Dns, type Interface, type IpConfig, type Result, type Route } from './spec.js';
import { attachedNetwork, createNetworkAttach } from './attach.js';
import { dnsAdd, dnsCheck, dnsDel, dnsGc, parseDnsConf, withResolver } from './dns.js';

export { BUILTIN_IPAM };

export interface BridgeConf extends IpamSection {
  readonly bridge: IfName;
  readonly isGateway: boolean;
  readonly isDefaultGateway: boolean;
  readonly ipMasq: boolean;
  readonly mtu: number | undefined;
  readonly hairpin: boolean;
  readonly icc: boolean;
  /** Validated by deps.firewall (the composition root knows the backends). */
  readonly firewall: string;
  readonly dns: Dns | undefined;
}

function invalid(field: string, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: ${why}`, { details: { field } });
}

export function parseBridgeConf(c: Readonly<Record<string, unknown>>): BridgeConf {
  const k = parseInput(BridgeConfShape, c, '');
  const bridge = parseIfName(k.bridge ?? 'cni0', 'bridge');
  let mtu: number | undefined;
  if (k.mtu !== undefined && k.mtu !== 0) {
    if (!Number.isInteger(k.mtu) || k.mtu < 68 || k.mtu > 65_535) throw invalid('mtu', `must be an integer 68-65535, got ${JSON.stringify(k.mtu)}`);
    mtu = k.mtu;
  }
  if (k.vlan !== undefined && k.vlan !== 0) throw new CniError(CNI_ERR.UNSUPPORTED_FIELD, `vlan: ${JSON.stringify(k.vlan)}: VLAN filtering is not supported by tsnet-bridge`, 'unsupported field');
  const isDefaultGateway = k.isDefaultGateway ?? false;
  return {
    bridge,
    isGateway: (k.isGateway ?? false) || isDefaultGateway,
    isDefaultGateway,
    ipMasq: k.ipMasq ?? false,
    mtu,
    hairpin: k.hairpinMode ?? false,
    icc: k.icc ?? true,
    firewall: k.firewallBackend ?? 'nftables',
    ...parseIpamSection(c, 'tsnet-bridge'),
    dns: parseDns(goField(c, 'dns'), 'dns'),
  };
}

/**
 * `runtimeConfig.bandwidth` (bits/s, bits): a rate needs its burst, as with the reference plugin.
 * go-cni sends `{"IngressRate":...,"IngressBurst":...,"EgressRate":...,"EgressBurst":...}`.
 */
export interface Bandwidth {
  readonly ingressRate?: number;
  readonly ingressBurst?: number;
  readonly egressRate?: number;
  readonly egressBurst?: number;
}

export function parseBandwidth(config: Readonly<Record<string, unknown>>): Bandwidth | undefined {
  const raw = goPath(config, ['runtimeConfig', 'bandwidth'], 'nullable');
  if (raw === undefined) return undefined;
  const b = parseInput(BandwidthSchema, raw, 'runtimeConfig.bandwidth');
  for (const side of ['ingress', 'egress'] as const) {
    if ((b[`${side}Rate`] ?? 0) > 0 && !((b[`${side}Burst`] ?? 0) > 0)) throw invalid(`runtimeConfig.bandwidth.${side}Burst`, `must be given with ${side}Rate`);
  }
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) if (v !== undefined) out[k] = v;
  return out as Bandwidth;
}

function runtimeMac(req: Request): MacAddr | undefined {
  const fromRc = goPath(req.config, ['runtimeConfig', 'mac']);
  if (fromRc !== undefined) return parseMac(fromRc as string, 'runtimeConfig.mac');
  const fromArgs = req.args.get('MAC');
  return fromArgs === undefined ? undefined : parseMac(fromArgs, 'CNI_ARGS MAC');
}

function prevResult(req: Request): Result | undefined {
  const p = goField(req.config, 'prevResult', 'nullable');
  return p === undefined ? undefined : fromWire(p);
}

/** The mappings ADD made for these ports and addresses; undefined if the input does not say. */
function publishedAtAdd(req: Request, prev: Result | undefined, spec: NetworkSpec, config: BridgeConfig, ep: EndpointId): PublishRequest | undefined {
  if (prev === undefined) return undefined;
  try {
    const ips = (prev.ips ?? []).map((i) => prefixAddr(parsePrefix(i.address)));
    const mappings = toFirewallMappings(parsePortMappings(req.config), ips);
    return mappings.length > 0 ? { network: spec, config, endpointId: ep, mappings } : undefined;
  } catch {
    return undefined; // DEL never fails on its input: the driver searches by owner
  }
}

/** The CNI network as the bridge driver's network: its firewall id, subnets, owner tag and config. */
function networkOf(req: Request, cfg: BridgeConf, subnets: readonly SubnetAssignment[]): { spec: NetworkSpec; config: BridgeConfig } {
  const id = cniNetworkId(req.name);
  return {
    spec: { id, name: req.name, subnets, internal: false, options: {}, owner: { scope: CNI_SCOPE, network: id } },
    config: makeBridgeConfig({ bridge: cfg.bridge, mtu: cfg.mtu, masquerade: cfg.ipMasq, icc: cfg.icc, gateway: cfg.isGateway, hairpin: cfg.hairpin }),
  };
}

/** The subnets of the network: the configured ranges (built-in IPAM), else those of the IPAM result's addresses. */
function subnetsOf(cfg: BridgeConf, ips: readonly { prefix: Prefix; gateway: IpAddr | undefined }[]): SubnetAssignment[] {
  if (cfg.ipam) {
    const out: SubnetAssignment[] = [];
    for (const r of cfg.ipam.ranges.flat()) if (!out.some((s) => s.subnet === r.subnet)) out.push({ subnet: r.subnet, gateway: r.gateway });
    return out;
  }
  return ips.filter((i) => i.gateway !== undefined).map((i) => ({ subnet: prefixNetwork(i.prefix), gateway: i.gateway as IpAddr }));
}

/** IPAM routes (CNI `routes`) as the driver's routes: a route without `gw` goes through the gateway of its family. */
function routesOf(routes: readonly Route[]): RouteSpec[] {
  return routes.map((r, k) => {
    const dst = prefixNetwork(parsePrefix(r.dst, `routes[${k}].dst`));
    return { dst, ...(r.gw !== undefined ? { via: parseIpAddr(r.gw, `routes[${k}].gw`) } : {}), ...(r.priority !== undefined ? { metric: r.priority } : {}) };
  });
}

export function createBridgePlugin(deps: CniDeps): Plugin {
  const log = deps.log.child({ plugin: 'tsnet-bridge' });
  const host = (): ReturnType<CniDeps['netlink']> => deps.netlink(deps.hostNs);
  /** The one bridge data path (drivers/bridge), bound to the configuration's firewall backend. */
  const driverFor = (cfg: BridgeConf): NetworkDriver =>
    createBridgeDriver({ hostNs: deps.hostNs, netlink: deps.netlink, sysctl: deps.sysctl, firewall: deps.firewall(cfg.firewall), log: deps.log, randomHex: deps.randomHex, tc: deps.tc, withLock: (name, fn) => deps.withLock(`cni-${name}`, fn) });

  const addresses = addressFlow(deps, log);

  /**
   * A subnet or a bridge held by another CNI network whose last container is gone (its
   * configuration renamed, say): that network's rules and bridge are tsnet's leftovers, so they go,
   * and the ADD proceeds. A network that still serves containers keeps them: the error says so.
   */
  async function reclaim(err: unknown, cfg: BridgeConf, spec: NetworkSpec): Promise<boolean> {
    const owner = err instanceof TsnetError && err.code === 'ALREADY_EXISTS' ? err.details['owner'] : undefined;
    if (typeof owner !== 'string' || !owner.startsWith('cni-') || owner === spec.id) return false;
    const links = await host().listLinks();
    const tag = formatOwnerTag({ scope: CNI_SCOPE, network: owner });
    const bridge = links.find((l) => l.kind === 'bridge' && l.alias === tag);
    const other: NetworkSpec = { ...spec, id: owner as NetworkId, name: owner, owner: { scope: CNI_SCOPE, network: owner } };
    const driver = driverFor(cfg);
    if (bridge !== undefined) {
      const otherCfg = makeBridgeConfig({ bridge: bridge.name, masquerade: false, icc: true, gateway: true, hairpin: true });
      if (!(await driver.isUnused?.(other, otherCfg))) {
        throw new TsnetError('ALREADY_EXISTS', `${err instanceof Error ? err.message : String(err)}: CNI network ${owner} still has containers on ${bridge.name}; give this network another subnet`, { details: { field: 'ipam.ranges', owner } });
      }
      await driver.deleteNetwork(other, otherCfg);
    } else {
      await deps.firewall(cfg.firewall).removeNetwork(owner as NetworkId);
    }
    log.info('reclaimed what a CNI network no container uses any more held', { network: spec.name, from: owner });
    return true;
  }

  async function add(req: Request): Promise<Result> {
    const cfg = parseBridgeConf(req.config);
    const driver = driverFor(cfg);
    const prev = prevResult(req);
    const ports = parsePortMappings(req.config);
    const bw = parseBandwidth(req.config);
    const dnsCap = parseDnsCapability(req.config);
    const mac = runtimeMac(req);
    const dnsConf = parseDnsConf(req.config, req.name, cfg.isGateway);
    const netnsPath = req.netns as string;
    if (!(await deps.isNetns(netnsPath))) throw new CniError(CNI_ERR.INVALID_ENV, `CNI_NETNS: ${netnsPath} is not a network namespace`, 'invalid environment variable CNI_NETNS');
    const sandbox: NetnsRef = { kind: 'path', path: netnsPath };
    const ifName = req.ifName as IfName;
    const hostIf = hostVethName(req.name, req.containerId, req.ifName);
    const ep = cniEndpointId(req.name, req.containerId, req.ifName);
    const undo = new UndoStack();
    let portsP: Promise<void> | undefined;
    // Start both ip helper processes (host, container) now, while IPAM runs, each with its first
    // read: the bridge, and whether CNI_IFNAME is free in the container.
    host().getLink(cfg.bridge).catch(() => undefined);
    const ifTakenP = deps.netlink(sandbox).getLink(ifName);
    ifTakenP.catch(() => undefined);
    try {
      // 1. addresses
      const { result: ipamResult, ips } = await addresses.add(req, cfg, undo);
      const subnets = subnetsOf(cfg, ips);
      const { spec, config } = networkOf(req, cfg, subnets);

      // 2. published ports (independent of the data path: applied meanwhile)
      const mappings = toFirewallMappings(ports, ips.map((i) => prefixAddr(i.prefix)));
      portsP = mappings.length > 0 ? driver.publish({ network: spec, config, endpointId: ep, mappings }) : Promise.resolve();
      portsP.catch(() => undefined);
      if (mappings.length > 0) undo.push('remove ports', () => driver.unpublish(ep));
      if ((await ifTakenP) !== undefined) throw new TsnetError('ALREADY_EXISTS', `CNI_IFNAME: ${ifName} already exists in ${netnsPath}`, { details: { field: 'CNI_IFNAME' } });

      // 3. the network (set up by the first ADD), the veth pair into it, addresses and routes inside
      const joinReq: JoinRequest = {
        network: spec, config, endpointId: ep, sandbox, ifName, hostIf, addresses: ips.map((i) => i.prefix),
        defaultRoute: cfg.isDefaultGateway, routes: routesOf(ipamResult.routes ?? []), ensureNetwork: true,
        ...(mac !== undefined ? { mac } : {}),
        ...(bw !== undefined ? { bandwidth: bandwidthOf(bw) } : {}),
      };
      const joined = await driver.join(joinReq).catch(async (err: unknown) => {
        if (!(await reclaim(err, cfg, spec))) throw err;
        return driver.join(joinReq);
      });
      undo.push(`remove ${hostIf}`, () => driver.leave({ network: spec, config, endpointId: ep, sandbox, ifName, hostIf }));
      await portsP;
      const resolver = await dnsAdd(deps, req, dnsConf, { addresses: ips.map((i) => prefixAddr(i.prefix)), subnets, undo });
      undo.commit();

      const base = prev?.interfaces?.length ?? 0;
      const mtu = cfg.mtu !== undefined ? { mtu: cfg.mtu } : {};
      const interfaces: Interface[] = [
        ...(prev?.interfaces ?? []),
        { name: cfg.bridge },
        { name: hostIf, ...(joined.hostMac !== undefined ? { mac: joined.hostMac } : {}), ...mtu },
        { name: ifName, ...(joined.mac !== undefined ? { mac: joined.mac } : {}), sandbox: netnsPath, ...mtu },
      ];
      const ipConfigs: IpConfig[] = [
        ...(prev?.ips ?? []),
        ...ips.map((i) => ({ address: i.prefix as string, ...(i.gateway !== undefined ? { gateway: i.gateway as string } : {}), interface: base + 2 })),
      ];
      const routes: Route[] = (joined.routes ?? []).map((r) => ({ dst: r.dst, ...(r.via !== undefined ? { gw: r.via } : {}), ...(r.metric !== undefined ? { priority: r.metric } : {}) }));
      const dns = withResolver(mergeDns(cfg.dns, ipamResult.dns, dnsCap), resolver);
      log.info('added', { container: req.containerId, ifName, hostIf, ips: ips.map((i) => i.prefix) });
      return {
        interfaces,
        ips: ipConfigs,
        routes: [...(prev?.routes ?? []), ...routes],
        ...(dns !== undefined ? { dns } : prev?.dns !== undefined ? { dns: prev.dns } : {}),
      };
    } catch (err) {
      await portsP?.catch(() => undefined); // settled before its undo step runs
      await undo.unwind(log);
      throw err;
    }
  }

  async function del(req: Request): Promise<void> {
    const cfg = parseBridgeConf(req.config);
    const driver = driverFor(cfg);
    const prev = prevResult(req);
    const hostIf = hostVethName(req.name, req.containerId, req.ifName);
    const ep = cniEndpointId(req.name, req.containerId, req.ifName);
    const { spec, config } = networkOf(req, cfg, []);
    const steps = [
      // Deleting the host end deletes the pair; the container namespace need not exist.
      { label: `veth ${hostIf}`, run: () => driver.leave({ network: spec, config, endpointId: ep, sandbox: deps.hostNs, ifName: req.ifName as IfName, hostIf }) },
      { label: 'ipam', run: () => addresses.del(req, cfg, prev) },
      { label: 'dns record', run: () => dnsDel(deps, req) },
    ];
    // Whatever the shape of the runtime's port mappings: DEL must not fail on its input.
    // What ADD published, from the same runtimeConfig and prevResult's addresses, is removed by key
    // (no search of every published port); the driver checks it is all still this endpoint's.
    if (mayHavePortMappings(req.config) || prev === undefined) steps.unshift({ label: 'ports', run: () => driver.unpublish(ep, publishedAtAdd(req, prev, spec, config, ep)) });
    // Independent steps: run them at once (teardownAll semantics: every step runs, NOT_FOUND is done).
    await Promise.all(steps.map((st) => teardownAll([st]).then(() => undefined, (err: unknown) => err))).then((errs) => {
      const real = errs.filter((e): e is Error => e instanceof Error);
      if (real.length > 0) throw new AggregateError(real, `teardown: ${real.map((e) => e.message).join('; ')}`);
    });
  }

  async function check(req: Request): Promise<void> {
    const cfg = parseBridgeConf(req.config);
    const driver = driverFor(cfg);
    const prev = prevResult(req);
    if (prev === undefined) throw invalid('prevResult', 'missing (CHECK needs the result of ADD)');
    const netnsPath = req.netns as string;
    if (!(await deps.isNetns(netnsPath))) throw new CniError(CNI_ERR.INVALID_ENV, `CNI_NETNS: ${netnsPath} is not a network namespace`, 'invalid environment variable CNI_NETNS');
    const ctrIdx = (prev.interfaces ?? []).findIndex((i) => i.name === req.ifName && i.sandbox !== undefined);
    if (ctrIdx < 0) throw invalid('prevResult.interfaces', `no interface ${req.ifName} with a sandbox`);
    const want = (prev.ips ?? []).filter((i) => i.interface === ctrIdx).map((i) => parsePrefix(i.address, 'prevResult.ips.address'));
    const { spec, config } = networkOf(req, cfg, []);
    const problems = await driver.checkJoin?.({
      network: spec, config, endpointId: cniEndpointId(req.name, req.containerId, req.ifName), sandbox: { kind: 'path', path: netnsPath },
      ifName: req.ifName as IfName, hostIf: hostVethName(req.name, req.containerId, req.ifName), addresses: want, defaultRoute: false,
    });
    if (problems !== undefined && problems.length > 0) throw new TsnetError('NOT_FOUND', problems.join('; '), { details: { field: 'prevResult' } });
    await addresses.check(req, cfg, prev);
    const fw = await deps.firewall(cfg.firewall).list();
    if (cfg.firewall !== 'none' && !fw.networks.includes(spec.id)) throw new TsnetError('NOT_FOUND', `firewall rules of network ${req.name} are missing`);
    if (toFirewallMappings(parsePortMappings(req.config), want.map(prefixAddr)).length > 0 && !fw.endpoints.includes(cniEndpointId(req.name, req.containerId, req.ifName))) {
      throw new TsnetError('NOT_FOUND', `published ports of ${req.containerId}/${req.ifName} are missing`, { details: { field: 'runtimeConfig.portMappings' } });
    }
    await dnsCheck(deps, req, parseDnsConf(req.config, req.name, cfg.isGateway));
  }

  async function status(req: Request): Promise<void> {
    await addresses.status(req, parseBridgeConf(req.config));
  }

  async function gc(req: Request, valid: readonly Attachment[]): Promise<void> {
    const cfg = parseBridgeConf(req.config);
    const driver = driverFor(cfg);
    const { spec, config } = networkOf(req, cfg, []);
    const keepVeths = new Set(valid.map((a) => hostVethName(req.name, a.containerId, a.ifName)));
    const keepEps = new Set<string>(valid.map((a) => cniEndpointId(req.name, a.containerId, a.ifName)));
    const prefix = cniEndpointPrefix(req.name);
    const fw = deps.firewall(cfg.firewall);
    await teardownAll([
      { label: 'ipam', run: () => addresses.gc(req, cfg, valid) },
      { label: 'veths', run: async () => void (await driver.sweepEndpoints?.(spec, config, keepVeths)) },
      {
        label: 'ports',
        run: async () => {
          const stale = (await fw.list()).endpoints.filter((e) => e.startsWith(prefix) && !keepEps.has(e));
          await teardownAll(stale.map((e) => ({ label: `ports ${e}`, run: () => fw.removePorts(e) })));
        },
      },
      {
        label: 'dns records',
        run: async () => {
          const removed = await dnsGc(deps, req, valid);
          if (removed.length > 0) log.info('gc removed dns records', { network: req.name, records: removed.length });
        },
      },
    ]);
    // No attachment left: the network itself (its rules, and its bridge when tsnet made it) goes,
    // under its lock, unless an ADD gave it a port meanwhile.
    if (valid.length === 0) {
      await deps.withLock(`cni-net-${spec.id}`, async () => {
        if (await driver.isUnused?.(spec, config)) await driver.deleteNetwork(spec, config);
      });
    }
  }

  // `tsnetNetwork`: the attachment joins a network of tsnet's controller (plugins/cni/attach.ts).
  const attach = createNetworkAttach(deps);
  const via = <A extends unknown[], R>(own: (req: Request, ...a: A) => Promise<R>, other: (req: Request, ...a: A) => Promise<R>) =>
    (req: Request, ...a: A): Promise<R> => (attachedNetwork(req.config) !== undefined ? other(req, ...a) : own(req, ...a));
  return { add: via(add, attach.add), del: via(del, attach.del), check: via(check, attach.check), status: via(status, attach.status), gc: via(gc, attach.gc) };
}

function bandwidthOf(b: Bandwidth): { ingress?: Shape; egress?: Shape } {
  return {
    ...((b.ingressRate ?? 0) > 0 ? { ingress: { rate: b.ingressRate ?? 0, burst: b.ingressBurst ?? 0 } } : {}),
    ...((b.egressRate ?? 0) > 0 ? { egress: { rate: b.egressRate ?? 0, burst: b.egressBurst ?? 0 } } : {}),
  };
}

/**
 * The `dns` capability, `runtimeConfig.dns` with `servers`, `searches` and `options` (go-cni:
 * `Servers`, `Searches`, `Options`), as a result's dns. An empty or null list adds nothing.
 */
export function parseDnsCapability(config: Readonly<Record<string, unknown>>): Dns | undefined {
  const cap = goPath(config, ['runtimeConfig', 'dns']);
  if (cap === undefined) return undefined;
  const d = parseInput(DnsCapabilitySchema, cap, 'runtimeConfig.dns');
  const some = (v: readonly string[] | null | undefined): string[] | undefined => (v !== undefined && v !== null && v.length > 0 ? [...v] : undefined);
  const [nameservers, search, options] = [some(d.servers), some(d.searches), some(d.options)];
  const out: Dns = { ...(nameservers ? { nameservers } : {}), ...(search ? { search } : {}), ...(options ? { options } : {}) };
  return Object.keys(out).length > 0 ? out : undefined;
}

function mergeDns(conf: Dns | undefined, ipam: Dns | undefined, fromCap: Dns | undefined): Dns | undefined {
  const parts = [ipam, conf, fromCap].filter((d): d is Dns => d !== undefined);
  if (parts.length === 0) return undefined;
  return Object.assign({}, ...parts) as Dns;
}
