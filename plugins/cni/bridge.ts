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
import { TsnetError, isCode } from '../../core/errors.js';
import {
  addrFamily, parseIfName, parseIpAddr, parseMac, parsePrefix, prefixAddr, prefixLen, prefixNetwork,
  type IfName, type IpAddr, type MacAddr, type NetnsRef, type Prefix,
} from '../../core/net.js';
import { teardownAll } from '../../core/teardown.js';
import { UndoStack } from '../../core/undo.js';
import type { Link, NetlinkOp, RouteSpec } from '../../sys/netlink/api.js';
import type { HostLocalStore } from '../../sys/store/host-local.js';
import type { CniDeps } from './deps.js';
import { CNI_ERR, CniError } from './errors.js';
import { ipamAdd, ipamCheck, ipamDel, ipamGc, ourAddresses, parseIpamConfig, requestedIps, type IpamConfig } from './ipam.js';
import { cniEndpointId, cniEndpointPrefix, cniNetworkId, hostVethName, parsePortMappings, toFirewallMappings } from './names.js';
import type { Attachment, Plugin, Request } from './skel.js';
import { fromWire, parseDns, type Dns, type Interface, type IpConfig, type Result, type Route } from './spec.js';
import { dnsAdd, dnsCheck, dnsDel, dnsGc, parseDnsConf, withResolver } from './dns.js';

/** ipam.type values served in process (host-local's on-disk layout). */
export const BUILTIN_IPAM = ['tsnet-ipam', 'tsnet', 'builtin'];

export interface BridgeConf {
  readonly bridge: IfName;
  readonly isGateway: boolean;
  readonly isDefaultGateway: boolean;
  readonly ipMasq: boolean;
  readonly mtu: number | undefined;
  readonly hairpin: boolean;
  readonly icc: boolean;
  /** Validated by deps.firewall (the composition root knows the backends). */
  readonly firewall: string;
  readonly ipamRaw: Readonly<Record<string, unknown>>;
  /** Parsed when the IPAM is built in; undefined when delegated. */
  readonly ipam: IpamConfig | undefined;
  readonly ipamType: string;
  readonly dns: Dns | undefined;
}

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

function invalid(field: string, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: ${why}`, { details: { field } });
}

function bool(c: Readonly<Record<string, unknown>>, key: string, dflt: boolean): boolean {
  const v = c[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw invalid(key, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

export function parseBridgeConf(c: Readonly<Record<string, unknown>>): BridgeConf {
  const br = c['bridge'] ?? 'cni0';
  if (typeof br !== 'string') throw invalid('bridge', 'must be a string');
  const bridge = parseIfName(br, 'bridge');
  const mtuRaw = c['mtu'];
  let mtu: number | undefined;
  if (mtuRaw !== undefined && mtuRaw !== 0) {
    if (typeof mtuRaw !== 'number' || !Number.isInteger(mtuRaw) || mtuRaw < 68 || mtuRaw > 65_535) throw invalid('mtu', `must be an integer 68-65535, got ${JSON.stringify(mtuRaw)}`);
    mtu = mtuRaw;
  }
  const vlan = c['vlan'];
  if (vlan !== undefined && vlan !== 0) throw new CniError(CNI_ERR.UNSUPPORTED_FIELD, `vlan: ${JSON.stringify(vlan)}: VLAN filtering is not supported by tsnet-bridge`, 'unsupported field');
  const fw = c['firewallBackend'] ?? 'nftables';
  if (typeof fw !== 'string') throw invalid('firewallBackend', 'must be a string');
  const ipamRaw = c['ipam'];
  if (!isObj(ipamRaw)) throw invalid('ipam', ipamRaw === undefined ? 'missing (tsnet-bridge needs addresses: give ipam.ranges or ipam.type)' : 'must be an object');
  const t = ipamRaw['type'];
  if (t !== undefined && (typeof t !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(t))) throw invalid('ipam.type', `${JSON.stringify(t)} is not a plugin name`);
  const ipamType = (t as string | undefined) ?? 'tsnet-ipam';
  const builtin = BUILTIN_IPAM.includes(ipamType);
  const isDefaultGateway = bool(c, 'isDefaultGateway', false);
  return {
    bridge,
    isGateway: bool(c, 'isGateway', false) || isDefaultGateway,
    isDefaultGateway,
    ipMasq: bool(c, 'ipMasq', false),
    mtu,
    hairpin: bool(c, 'hairpinMode', false),
    icc: bool(c, 'icc', true),
    firewall: fw,
    ipamRaw,
    ipam: builtin ? parseIpamConfig(ipamRaw) : undefined,
    ipamType,
    dns: parseDns(c['dns'], 'dns'),
  };
}

/** `runtimeConfig.bandwidth` (bits/s, bits): a rate needs its burst, as with the reference plugin. */
export interface Bandwidth {
  readonly ingressRate?: number;
  readonly ingressBurst?: number;
  readonly egressRate?: number;
  readonly egressBurst?: number;
}

export function parseBandwidth(config: Readonly<Record<string, unknown>>): Bandwidth | undefined {
  const rc = config['runtimeConfig'];
  const raw = isObj(rc) ? rc['bandwidth'] : undefined;
  if (raw === undefined) return undefined;
  if (!isObj(raw)) throw invalid('runtimeConfig.bandwidth', 'must be an object');
  const out: Record<string, number> = {};
  for (const k of ['ingressRate', 'ingressBurst', 'egressRate', 'egressBurst'] as const) {
    const v = raw[k];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > Number.MAX_SAFE_INTEGER) throw invalid(`runtimeConfig.bandwidth.${k}`, 'must be a non-negative integer');
    out[k] = v;
  }
  for (const side of ['ingress', 'egress'] as const) {
    if ((out[`${side}Rate`] ?? 0) > 0 && !((out[`${side}Burst`] ?? 0) > 0)) throw invalid(`runtimeConfig.bandwidth.${side}Burst`, `must be given with ${side}Rate`);
  }
  return out as Bandwidth;
}

function runtimeMac(req: Request): MacAddr | undefined {
  const rc = req.config['runtimeConfig'];
  const fromRc = isObj(rc) ? rc['mac'] : undefined;
  if (fromRc !== undefined) return parseMac(fromRc as string, 'runtimeConfig.mac');
  const fromArgs = req.args.get('MAC');
  return fromArgs === undefined ? undefined : parseMac(fromArgs, 'CNI_ARGS MAC');
}

function prevResult(req: Request): Result | undefined {
  const p = req.config['prevResult'];
  return p === undefined || p === null ? undefined : fromWire(p);
}

const DEFAULT_DST: Record<4 | 6, Prefix> = { 4: '0.0.0.0/0' as Prefix, 6: '::/0' as Prefix };

function randomMac(randomHex: (n: number) => string): MacAddr {
  return `02${randomHex(5)}`.match(/../g)?.join(':') as MacAddr;
}

export function createBridgePlugin(deps: CniDeps): Plugin {
  const log = deps.log.child({ plugin: 'tsnet-bridge' });
  const host = (): ReturnType<CniDeps['netlink']> => deps.netlink(deps.hostNs);

  const att = (req: Request): Attachment => ({ containerId: req.containerId, ifName: req.ifName });

  async function store(req: Request, cfg: BridgeConf): Promise<HostLocalStore> {
    return deps.openIpamStore(cfg.ipam?.dataDir, req.name);
  }

  /** Delegated IPAM: the same env and the whole configuration, as the spec says. */
  async function delegate(req: Request, cfg: BridgeConf, verb: string): Promise<unknown> {
    return deps.execPlugin(cfg.ipamType, verb, req.path, req.env, req.stdin);
  }

  /** Forwards STATUS/GC to a delegated IPAM that may predate them (the reference 1.1.1 does). */
  async function delegateLenient(req: Request, cfg: BridgeConf, verb: string): Promise<void> {
    try {
      await delegate(req, cfg, verb);
    } catch (err) {
      if (err instanceof CniError && err.code === CNI_ERR.INCOMPATIBLE_VERSION) {
        log.debug(`delegated ipam ${cfg.ipamType} does not implement ${verb} at ${req.cniVersion}`, {});
        return;
      }
      throw err;
    }
  }

  /**
   * Creates the bridge, its gateway addresses, sysctls and firewall rules if the bridge is missing.
   * When the bridge is there and up (every ADD but the first), it changes nothing and returns the
   * gateway-address ops still to run, so the caller folds them into its own host batch (one ip
   * round trip per ADD instead of three).
   */
  async function ensureNetwork(req: Request, cfg: BridgeConf, subnets: readonly { subnet: Prefix; gateway: IpAddr }[], existingP?: Promise<Link | undefined>): Promise<NetlinkOp[]> {
    const h = host();
    const gwOps = (): NetlinkOp[] =>
      cfg.isGateway ? subnets.map((s): NetlinkOp => ({ op: 'ensureAddr', dev: cfg.bridge, prefix: `${s.gateway}/${prefixLen(s.subnet)}` as Prefix, nodad: addrFamily(s.subnet) === 6 })) : [];
    const existing = await (existingP ?? h.getLink(cfg.bridge));
    if (existing && existing.kind !== 'bridge') throw new TsnetError('ALREADY_EXISTS', `bridge: ${cfg.bridge} exists and is a ${existing.kind ?? 'non-bridge'} interface`, { details: { field: 'bridge' } });
    if (existing?.up) return gwOps();
    return deps.withLock(`cni-net-${cniNetworkId(req.name)}`, async () => {
      // Concurrent first ADDs all find the bridge missing; the first one sets the network up.
      if ((await h.getLink(cfg.bridge))?.up) return gwOps();
      // A MAC of its own (as the CNM bridge driver does): without one, the bridge takes its ports'
      // lowest, which changes when that container leaves, and the others' ARP entries for the
      // gateway then point at a MAC nobody owns until they expire (lost DNS and traffic for ~30 s).
      const ops: NetlinkOp[] = [{ op: 'ensureBridge', name: cfg.bridge, mac: randomMac(deps.randomHex), ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) }, ...gwOps(), { op: 'setLink', name: cfg.bridge, changes: { up: true } }];
      const failed = (await h.batch(ops)).find((r) => !r.ok);
      if (failed && !failed.ok) throw failed.error;
      const fams = new Set(subnets.map((s) => addrFamily(s.subnet)));
      const sysctls: Record<string, number> = {};
      if (fams.has(4)) {
        sysctls['net.ipv4.ip_forward'] = 1;
        sysctls[`net.ipv4.conf.${cfg.bridge.replaceAll('.', '/')}.route_localnet`] = 1;
      }
      if (fams.has(6)) sysctls['net.ipv6.conf.all.forwarding'] = 1;
      await deps.sysctl(deps.hostNs).set(sysctls);
      await deps.firewall(cfg.firewall).ensureNetwork({
        networkId: cniNetworkId(req.name),
        bridge: cfg.bridge,
        subnets: subnets.map((s) => s.subnet),
        masquerade: cfg.ipMasq,
        internal: false,
        icc: cfg.icc,
      });
      log.info('network ready', { network: req.name, bridge: cfg.bridge });
      return [];
    });
  }

  async function add(req: Request): Promise<Result> {
    const cfg = parseBridgeConf(req.config);
    deps.firewall(cfg.firewall);
    const prev = prevResult(req);
    const ports = parsePortMappings(req.config);
    const bandwidth = parseBandwidth(req.config);
    const mac = runtimeMac(req) ?? randomMac(deps.randomHex);
    const requested = cfg.ipam ? requestedIps(req.config, req.args) : [];
    const dnsConf = parseDnsConf(req.config, req.name, cfg.isGateway);
    const netnsPath = req.netns as string;
    if (!(await deps.isNetns(netnsPath))) throw new CniError(CNI_ERR.INVALID_ENV, `CNI_NETNS: ${netnsPath} is not a network namespace`, 'invalid environment variable CNI_NETNS');
    const sandbox: NetnsRef = { kind: 'path', path: netnsPath };
    const ifName = req.ifName as IfName;
    const hostIf = hostVethName(req.name, req.containerId, req.ifName);
    const undo = new UndoStack();
    let portsP: Promise<void> | undefined;
    // Start both ip helper processes (host, container) now, while IPAM runs, each with its first
    // read: the bridge, and whether CNI_IFNAME is free in the container.
    const h = host();
    const ctr = deps.netlink(sandbox);
    const bridgeP = h.getLink(cfg.bridge);
    bridgeP.catch(() => undefined);
    const ifTakenP = ctr.getLink(ifName);
    ifTakenP.catch(() => undefined);
    try {
      // 1. addresses
      let ipamResult: Result;
      if (cfg.ipam) {
        const s = await store(req, cfg);
        ipamResult = await ipamAdd(s, cfg.ipam, att(req), requested);
        const known = ourAddresses(cfg.ipam, ipamResult);
        undo.push('release addresses', () => ipamDel(s, att(req), known));
      } else {
        ipamResult = fromWire(await delegate(req, cfg, 'ADD'), `ipam ${cfg.ipamType} result`);
        undo.push(`ipam ${cfg.ipamType} DEL`, () => delegate(req, cfg, 'DEL'));
      }
      const ips = (ipamResult.ips ?? []).map((ip, i) => {
        const p = parsePrefix(ip.address, `ipam result ips[${i}].address`);
        const gw = ip.gateway === undefined ? undefined : parseIpAddr(ip.gateway, `ipam result ips[${i}].gateway`);
        return { prefix: p, gateway: gw };
      });
      if (ips.length === 0) throw new TsnetError('INVALID_CONFIG', `ipam: ${cfg.ipamType} returned no address`, { details: { field: 'ipam' } });
      const subnets = cfg.ipam
        ? cfg.ipam.ranges.flat().map((r) => ({ subnet: r.subnet, gateway: r.gateway }))
        : ips.filter((i) => i.gateway !== undefined).map((i) => ({ subnet: prefixNetwork(i.prefix), gateway: i.gateway as IpAddr }));

      // 2. published ports (independent of the data path: applied meanwhile)
      const mappings = toFirewallMappings(ports, ips.map((i) => prefixAddr(i.prefix)));
      const ep = cniEndpointId(req.name, req.containerId, req.ifName);
      portsP = mappings.length > 0 ? deps.firewall(cfg.firewall).ensurePorts({ endpointId: ep, networkId: cniNetworkId(req.name), bridge: cfg.bridge, mappings }) : Promise.resolve();
      portsP.catch(() => undefined);
      if (mappings.length > 0) undo.push('remove ports', () => deps.firewall(cfg.firewall).removePorts(ep));

      // 3. the network
      const [pendingGw, taken] = await Promise.all([ensureNetwork(req, cfg, subnets, bridgeP), ifTakenP]);
      if (taken !== undefined) throw new TsnetError('ALREADY_EXISTS', `CNI_IFNAME: ${ifName} already exists in ${netnsPath}`, { details: { field: 'CNI_IFNAME' } });

      // 4. the veth pair into the bridge (one host batch with the gateway addresses), then the
      // addresses and routes inside
      const hostMac = randomMac(deps.randomHex);
      const hostOps: NetlinkOp[] = [
        ...pendingGw,
        { op: 'addVeth', name: hostIf, peer: ifName, peerNetns: sandbox, mac: hostMac, peerMac: mac, ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) },
        { op: 'setLink', name: hostIf, changes: { master: cfg.bridge, up: true, ...(cfg.icc ? {} : { isolated: true }), ...(cfg.hairpin ? { hairpin: true } : {}) } },
      ];
      const hostResults = await h.batch(hostOps);
      if (hostResults[pendingGw.length]?.ok === true) undo.push(`remove ${hostIf}`, () => h.removeLink(hostIf));
      const hostFailed = hostResults.find((r) => !r.ok);
      if (hostFailed && !hostFailed.ok) throw hostFailed.error;
      const routes: Route[] = [];
      if (cfg.isDefaultGateway) {
        for (const i of ips) if (i.gateway !== undefined && !routes.some((r) => r.dst === DEFAULT_DST[addrFamily(i.prefix)])) routes.push({ dst: DEFAULT_DST[addrFamily(i.prefix)], gw: i.gateway });
      }
      for (const r of ipamResult.routes ?? []) if (!routes.some((x) => x.dst === r.dst)) routes.push(r);
      const inside: NetlinkOp[] = [
        ...ips.map((i): NetlinkOp => ({ op: 'addAddr', dev: ifName, prefix: i.prefix, nodad: addrFamily(i.prefix) === 6 })),
        { op: 'setLink', name: ifName, changes: { up: true } },
        ...routes.map((r, k): NetlinkOp => {
          const dst = prefixNetwork(parsePrefix(r.dst, `routes[${k}].dst`));
          const gw = r.gw !== undefined ? parseIpAddr(r.gw, `routes[${k}].gw`) : ips.find((i) => addrFamily(i.prefix) === addrFamily(dst))?.gateway;
          const route: RouteSpec = { dst, dev: ifName, ...(gw !== undefined ? { via: gw } : {}), ...(r.priority !== undefined ? { metric: r.priority } : {}) };
          return { op: 'ensureRoute', route };
        }),
      ];
      const [results] = await Promise.all([ctr.batch(inside), portsP]);
      const failed = results.find((r) => !r.ok);
      if (failed && !failed.ok) throw failed.error;
      if (bandwidth !== undefined) {
        // Into the container: leaves the host end. Out of it: leaves the container end.
        await Promise.all([
          (bandwidth.ingressRate ?? 0) > 0 ? deps.tc(deps.hostNs).shape(hostIf, { rate: bandwidth.ingressRate ?? 0, burst: bandwidth.ingressBurst ?? 0 }) : undefined,
          (bandwidth.egressRate ?? 0) > 0 ? deps.tc(sandbox).shape(ifName, { rate: bandwidth.egressRate ?? 0, burst: bandwidth.egressBurst ?? 0 }) : undefined,
        ]);
      }
      const resolver = await dnsAdd(deps, req, dnsConf, { addresses: ips.map((i) => prefixAddr(i.prefix)), subnets, undo });
      undo.commit();

      const base = prev?.interfaces?.length ?? 0;
      const interfaces: Interface[] = [
        ...(prev?.interfaces ?? []),
        { name: cfg.bridge },
        { name: hostIf, mac: hostMac, ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) },
        { name: ifName, mac, sandbox: netnsPath, ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) },
      ];
      const ipConfigs: IpConfig[] = [
        ...(prev?.ips ?? []),
        ...ips.map((i) => ({ address: i.prefix as string, ...(i.gateway !== undefined ? { gateway: i.gateway as string } : {}), interface: base + 2 })),
      ];
      const dns = withResolver(mergeDns(cfg.dns, ipamResult.dns, req.config), resolver);
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
    const prev = prevResult(req);
    const hostIf = hostVethName(req.name, req.containerId, req.ifName);
    const steps = [
      // Deleting the host end deletes the pair; the container namespace need not exist.
      { label: `veth ${hostIf}`, run: () => host().removeLink(hostIf) },
      {
        label: 'ipam',
        run: async () => {
          if (cfg.ipam) await ipamDel(await store(req, cfg), att(req), ourAddresses(cfg.ipam, prev));
          else await delegate(req, cfg, 'DEL');
        },
      },
      { label: 'dns record', run: () => dnsDel(deps, req) },
    ];
    if (parsePortMappings(req.config).length > 0 || prev === undefined) {
      steps.unshift({ label: 'ports', run: () => deps.firewall(cfg.firewall).removePorts(cniEndpointId(req.name, req.containerId, req.ifName)) });
    }
    // Independent steps: run them at once (teardownAll semantics: every step runs, NOT_FOUND is done).
    await Promise.all(steps.map((st) => teardownAll([st]).then(() => undefined, (err: unknown) => err))).then((errs) => {
      const real = errs.filter((e): e is Error => e instanceof Error);
      if (real.length > 0) throw new AggregateError(real, `teardown: ${real.map((e) => e.message).join('; ')}`);
    });
  }

  async function check(req: Request): Promise<void> {
    const cfg = parseBridgeConf(req.config);
    const prev = prevResult(req);
    if (prev === undefined) throw invalid('prevResult', 'missing (CHECK needs the result of ADD)');
    const hostIf = hostVethName(req.name, req.containerId, req.ifName);
    const netnsPath = req.netns as string;
    if (!(await deps.isNetns(netnsPath))) throw new CniError(CNI_ERR.INVALID_ENV, `CNI_NETNS: ${netnsPath} is not a network namespace`, 'invalid environment variable CNI_NETNS');
    const h = host();
    const [br, veth] = await Promise.all([h.getLink(cfg.bridge), h.getLink(hostIf)]);
    if (!br) throw new TsnetError('NOT_FOUND', `bridge ${cfg.bridge} is missing`, { details: { field: 'bridge' } });
    if (!veth || veth.master !== cfg.bridge) throw new TsnetError('NOT_FOUND', `host interface ${hostIf} is ${veth ? `not a port of ${cfg.bridge}` : 'missing'}`);
    const ctrIdx = (prev.interfaces ?? []).findIndex((i) => i.name === req.ifName && i.sandbox !== undefined);
    if (ctrIdx < 0) throw invalid('prevResult.interfaces', `no interface ${req.ifName} with a sandbox`);
    const want = (prev.ips ?? []).filter((i) => i.interface === ctrIdx).map((i) => parsePrefix(i.address, 'prevResult.ips.address'));
    let have: readonly { prefix: Prefix }[];
    try {
      have = await deps.netlink({ kind: 'path', path: netnsPath }).listAddrs(req.ifName as IfName);
    } catch (err) {
      if (isCode(err, 'NOT_FOUND')) throw new TsnetError('NOT_FOUND', `interface ${req.ifName} is missing in ${netnsPath}`, { cause: err });
      throw err;
    }
    for (const p of want) {
      if (!have.some((a) => a.prefix === p)) throw new TsnetError('NOT_FOUND', `address ${p} is missing on ${req.ifName} in ${netnsPath}`, { details: { field: 'ips' } });
    }
    if (cfg.ipam) await ipamCheck(await store(req, cfg), cfg.ipam, att(req), prev);
    else await delegate(req, cfg, 'CHECK');
    const fw = await deps.firewall(cfg.firewall).list();
    if (cfg.firewall !== 'none' && !fw.networks.includes(cniNetworkId(req.name))) throw new TsnetError('NOT_FOUND', `firewall rules of network ${req.name} are missing`);
    if (toFirewallMappings(parsePortMappings(req.config), want.map(prefixAddr)).length > 0 && !fw.endpoints.includes(cniEndpointId(req.name, req.containerId, req.ifName))) {
      throw new TsnetError('NOT_FOUND', `published ports of ${req.containerId}/${req.ifName} are missing`, { details: { field: 'runtimeConfig.portMappings' } });
    }
    await dnsCheck(deps, req, parseDnsConf(req.config, req.name, cfg.isGateway));
  }

  async function status(req: Request): Promise<void> {
    const cfg = parseBridgeConf(req.config);
    if (cfg.ipam) {
      try {
        await store(req, cfg);
      } catch (err) {
        throw new CniError(CNI_ERR.NOT_AVAILABLE, `ipam data directory unusable: ${err instanceof Error ? err.message : String(err)}`, 'plugin not available');
      }
    } else {
      await delegateLenient(req, cfg, 'STATUS');
    }
  }

  async function gc(req: Request, valid: readonly Attachment[]): Promise<void> {
    const cfg = parseBridgeConf(req.config);
    const keepVeths = new Set(valid.map((a) => hostVethName(req.name, a.containerId, a.ifName)));
    const keepEps = new Set<string>(valid.map((a) => cniEndpointId(req.name, a.containerId, a.ifName)));
    const prefix = cniEndpointPrefix(req.name);
    const fw = deps.firewall(cfg.firewall);
    const h = host();
    await teardownAll([
      {
        label: 'ipam',
        run: async () => {
          if (cfg.ipam) {
            const released = await ipamGc(await store(req, cfg), valid);
            if (released.length > 0) log.info('gc released addresses', { network: req.name, ips: released });
          } else {
            await delegateLenient(req, cfg, 'GC');
          }
        },
      },
      {
        label: 'veths',
        run: async () => {
          const stale = (await h.listLinks()).filter((l) => l.master === cfg.bridge && /^veth[0-9a-f]{8}$/.test(l.name) && !keepVeths.has(l.name));
          await teardownAll(stale.map((l) => ({ label: l.name, run: () => h.removeLink(l.name) })));
        },
      },
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
  }

  return { add, del, check, status, gc };
}

function mergeDns(conf: Dns | undefined, ipam: Dns | undefined, config: Readonly<Record<string, unknown>>): Dns | undefined {
  const rc = config['runtimeConfig'];
  const cap = isObj(rc) && isObj(rc['dns']) ? rc['dns'] : undefined;
  const fromCap: Dns | undefined = cap
    ? {
        ...(Array.isArray(cap['servers']) ? { nameservers: cap['servers'] as string[] } : {}),
        ...(Array.isArray(cap['searches']) ? { search: cap['searches'] as string[] } : {}),
        ...(Array.isArray(cap['options']) ? { options: cap['options'] as string[] } : {}),
      }
    : undefined;
  const parts = [ipam, conf, fromCap].filter((d): d is Dns => d !== undefined);
  if (parts.length === 0) return undefined;
  return Object.assign({}, ...parts) as Dns;
}
