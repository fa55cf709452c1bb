/**
 * The bridge driver, the one bridge data path of every door (CLI, library, Docker plugin, CNI
 * plugin): a Linux bridge per network with the gateway address(es) on it, a veth pair per endpoint
 * (the container end created directly in the sandbox under its final name), masquerade and
 * isolation stated as intent to the firewall.
 *
 * Ownership: the bridge and every host-side veth carry the network's owner tag (drivers/owner.ts);
 * only tagged objects are ever deleted. A bridge of the requested name that exists without a tsnet
 * tag is the user's: it is used as it is (Docker's bridge driver does the same), the gateway
 * addresses it lacked are added and remembered (config.adopted), and `deleteNetwork` removes only
 * those. A non-bridge interface of that name, or a bridge another network or store owns, is refused
 * with nothing touched.
 *
 * Speed: a join is two round trips to the long-lived ip processes (one host batch: the pair, its
 * port flags and, for CNI, the gateway addresses; one sandbox batch: addresses, link up, routes),
 * plus one sysctl process when IPv6 must be switched off and a tc process per rate limit.
 */
import { TsnetError, wrap } from '../../core/errors.js';
import { addrFamily, makePrefix, prefixAddr, prefixContains, prefixLen, type EndpointId, type Family, type IfName, type MacAddr, type NetworkId, type Prefix } from '../../core/net.js';
import { teardownAll } from '../../core/teardown.js';
import { UndoStack } from '../../core/undo.js';
import type { EndpointPorts } from '../../sys/firewall/api.js';
import type { Link, NetlinkOp, RouteSpec } from '../../sys/netlink/api.js';
import type { DriverConfig, DriverDeps, HostPeerJoinRequest, JoinRequest, JoinResult, LeaveRequest, NetworkDriver, NetworkSpec, PublishRequest, RestoreRequest, RestoreResult } from '../api.js';
import { describeOwner, formatOwnerTag, ownership, parseOwnerTag, type OwnerTag } from '../owner.js';
import { parseBridgeOptions, readBridgeConfig, type BridgeConfig } from './config.js';

const DEFAULT_ROUTE: Record<Family, Prefix> = { 4: '0.0.0.0/0' as Prefix, 6: '::/0' as Prefix };

/**
 * The routes inside the sandbox: default routes (when asked) and the requested ones, each once per
 * destination. Shared with the macvlan driver.
 */
export function routesFor(req: JoinRequest): RouteSpec[] {
  const out: RouteSpec[] = [];
  const gw = (fam: Family) => req.network.subnets.find((s) => addrFamily(s.subnet) === fam)?.gateway;
  if (req.defaultRoute && !req.network.internal) {
    for (const s of req.network.subnets) {
      const dst = DEFAULT_ROUTE[addrFamily(s.subnet)];
      if (!out.some((r) => r.dst === dst)) out.push({ dst, via: s.gateway, dev: req.ifName });
    }
  }
  for (const r of req.routes ?? []) {
    if (out.some((x) => x.dst === r.dst && x.metric === r.metric)) continue;
    const via = r.via ?? gw(addrFamily(r.dst));
    out.push({ ...r, dev: req.ifName, ...(via !== undefined ? { via } : {}) });
  }
  return out;
}

/** A random, locally administered, unicast MAC address. */
export function randomMac(randomHex: (bytes: number) => string): MacAddr {
  const hex = `02${randomHex(5)}`;
  return hex.match(/../g)?.join(':') as MacAddr;
}

export function hostIfName(randomHex: (bytes: number) => string): IfName {
  return `veth${randomHex(4).slice(0, 7)}` as IfName;
}

/** The tag of a host-side interface of the network (the owner tag without the store's place). */
export const endpointTag = (o: OwnerTag): string => formatOwnerTag({ scope: o.scope, network: o.network });

function refuseBridge(cfg: BridgeConfig, link: Link, spec: NetworkSpec): TsnetError | undefined {
  if (link.kind !== 'bridge') {
    return new TsnetError('ALREADY_EXISTS', `bridge name ${cfg.bridge}: a ${link.kind ?? 'non-bridge'} interface of that name exists (nothing was changed)`, { details: { field: 'bridge' } });
  }
  switch (ownership(link, spec.owner)) {
    case 'ours':
    case 'foreign':
      return undefined;
    case 'sibling':
    case 'other-store':
      return new TsnetError('ALREADY_EXISTS', `bridge name ${cfg.bridge}: ${cfg.bridge} belongs to ${describeOwner(link.alias)} (nothing was changed)`, {
        details: { field: 'bridge', reason: 'owned', ...(parseOwnerTag(link.alias)?.scope === spec.owner.scope ? { owner: parseOwnerTag(link.alias)?.network } : {}) },
      });
  }
}

/** A publish request on `bridge` as the firewall's endpoint ports (publish, and unpublish's known mappings). */
const endpointPorts = (req: PublishRequest, bridge: IfName): EndpointPorts => ({ endpointId: req.endpointId, networkId: req.network.id, bridge, mappings: req.mappings });

export function createBridgeDriver(deps: DriverDeps): NetworkDriver {
  const log = deps.log.child({ component: 'bridge' });
  const host = () => deps.netlink(deps.hostNs);

  /**
   * A new bridge's subnets must not already be on another interface of the host: two bridges with
   * one gateway address and two routes to one subnet cut the host off from both. (CNM networks got
   * their subnets from IPAM, which checked the host's routes; a CNI configuration is taken as given.)
   */
  async function refuseOverlap(spec: NetworkSpec, cfg: BridgeConfig): Promise<void> {
    const [addrs, links] = await Promise.all([host().listAddrs(), host().listLinks()]);
    for (const s of spec.subnets) {
      const hit = addrs.find((a) => a.dev !== cfg.bridge && a.scope !== 'link' && addrFamily(a.prefix) === addrFamily(s.subnet) && prefixContains(s.subnet, prefixAddr(a.prefix)));
      if (hit === undefined) continue;
      const alias = links.find((l) => l.name === hit.dev)?.alias;
      const tag = parseOwnerTag(alias);
      throw new TsnetError('ALREADY_EXISTS', `subnet ${s.subnet}: ${hit.dev} already has ${hit.prefix} (${describeOwner(alias)}); a second bridge on it would cut the host off from both`, {
        details: { field: 'subnets', value: s.subnet, ...(tag?.scope === spec.owner.scope ? { owner: tag.network } : {}) },
      });
    }
  }

  const gatewayOps = (spec: NetworkSpec, cfg: BridgeConfig): NetlinkOp[] =>
    cfg.gateway
      ? spec.subnets.map((s) => ({ op: 'ensureAddr', dev: cfg.bridge, prefix: makePrefix(s.gateway, prefixLen(s.subnet)), nodad: addrFamily(s.subnet) === 6 }))
      : [];

  async function kernelSettings(spec: NetworkSpec, cfg: BridgeConfig): Promise<void> {
    if (spec.internal) return;
    const families = new Set(spec.subnets.map((s) => addrFamily(s.subnet)));
    const sysctls: Record<string, number> = {};
    if (families.has(4)) {
      sysctls['net.ipv4.ip_forward'] = 1;
      // Ports published on 127.0.0.1 are DNATed out through the bridge (the firewall drops
      // 127/8 arriving anywhere but lo, so the martian check is not what protects it).
      sysctls[`net.ipv4.conf.${cfg.bridge.replaceAll('.', '/')}.route_localnet`] = 1;
    }
    if (families.has(6)) sysctls['net.ipv6.conf.all.forwarding'] = 1;
    if (Object.keys(sysctls).length > 0) await deps.sysctl(deps.hostNs).set(sysctls);
  }

  /**
   * The full setup: the bridge (made, or a user's adopted), its addresses, sysctls, firewall intent.
   * Undoes its own steps on failure. Resolves with the config when adoption changed it.
   */
  async function setUp(spec: NetworkSpec, raw: DriverConfig, existingLink?: Link | null): Promise<DriverConfig | undefined> {
    const cfg = readBridgeConfig(raw);
    const h = host();
    const undo = new UndoStack();
    try {
      const existing = existingLink === null ? undefined : (existingLink ?? (await h.getLink(cfg.bridge)));
      let adopted = cfg.adopted;
      if (existing) {
        const refused = refuseBridge(cfg, existing, spec);
        if (refused) throw refused;
      }
      const foreign = existing !== undefined && ownership(existing, spec.owner) === 'foreign';
      if (!existing) await refuseOverlap(spec, cfg);
      if (!existing) {
        // A fixed MAC: a bridge without one takes the lowest MAC of its ports, so removing a
        // container could change the gateway's MAC under the other containers' ARP caches and cut
        // them off from the gateway (and the resolver on it) until their entries expire.
        await h.addBridge(cfg.bridge, { mac: randomMac(deps.randomHex), ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) });
        undo.push(`remove bridge ${cfg.bridge}`, () => h.removeLink(cfg.bridge));
        await h.setLink(cfg.bridge, { alias: formatOwnerTag(spec.owner) });
      }
      let ops = gatewayOps(spec, cfg);
      if (foreign) {
        // A user's bridge: add only the gateway addresses it lacks, and remember them.
        const have = new Set((await h.listAddrs(cfg.bridge)).map((a) => a.prefix as string));
        ops = ops.filter((o) => o.op === 'ensureAddr' && !have.has(o.prefix));
        const added = ops.map((o) => (o.op === 'ensureAddr' ? o.prefix : ''));
        adopted = { addedAddrs: [...new Set([...(cfg.adopted?.addedAddrs ?? []), ...added])] };
        for (const o of ops) if (o.op === 'ensureAddr') undo.push(`remove ${o.prefix}`, () => h.removeAddr(cfg.bridge, o.prefix));
      }
      ops.push({ op: 'setLink', name: cfg.bridge, changes: { up: true } });
      const failed = (await h.batch(ops)).find((r) => !r.ok);
      if (failed && !failed.ok) throw failed.error;
      await kernelSettings(spec, cfg);
      await deps.firewall.ensureNetwork({
        networkId: spec.id,
        bridge: cfg.bridge,
        subnets: spec.subnets.map((s) => s.subnet),
        masquerade: cfg.masquerade && !spec.internal,
        internal: spec.internal,
        icc: cfg.icc,
      });
      undo.commit();
      log.info('network ready', { network: spec.id, bridge: cfg.bridge, ...(foreign ? { adopted: true } : {}) });
      if (foreign && JSON.stringify(adopted) !== JSON.stringify(cfg.adopted)) return { ...raw, adopted };
      return undefined;
    } catch (err) {
      await undo.unwind(log);
      throw wrap(`create bridge network ${spec.name}`, err);
    }
  }

  /**
   * For a join that may be a network's first (CNI): the host ops to fold into the join's batch when
   * the bridge is up (the gateway addresses), after setting the network up under its lock when not.
   */
  async function ensureUp(spec: NetworkSpec, raw: DriverConfig): Promise<NetlinkOp[]> {
    const cfg = readBridgeConfig(raw);
    const h = host();
    const link = await h.getLink(cfg.bridge);
    if (link?.up === true) {
      const refused = refuseBridge(cfg, link, spec);
      if (refused) throw refused;
      return gatewayOps(spec, cfg);
    }
    return deps.withLock(`net-${spec.id}`, async () => {
      // Concurrent first joins all find the bridge missing; the first one sets the network up.
      const again = await h.getLink(cfg.bridge);
      if (again?.up === true) return gatewayOps(spec, cfg);
      await setUp(spec, raw, again ?? null);
      return [];
    });
  }

  async function deleteNetwork(spec: NetworkSpec, raw: DriverConfig): Promise<void> {
    const cfg = readBridgeConfig(raw);
    const h = host();
    await teardownAll([
      { label: `firewall of ${spec.id}`, run: () => deps.firewall.removeNetwork(spec.id) },
      {
        label: `bridge ${cfg.bridge}`,
        run: async () => {
          const link = await h.getLink(cfg.bridge);
          if (link === undefined) return;
          const who = ownership(link, spec.owner);
          if (who === 'ours' && link.kind === 'bridge') return h.removeLink(cfg.bridge);
          if (who === 'foreign') {
            // The user's bridge stays, with its own addresses; only what tsnet added goes.
            for (const p of cfg.adopted?.addedAddrs ?? []) await h.removeAddr(cfg.bridge, p as Prefix);
            return undefined;
          }
          log.warn('bridge not removed: it is not this network\'s', { network: spec.id, bridge: cfg.bridge, owner: link.alias });
          return undefined;
        },
      },
    ]).catch((err: unknown) => {
      throw wrap(`delete bridge network ${spec.name}`, err);
    });
    log.info('network removed', { network: spec.id, bridge: cfg.bridge });
  }

  async function join(req: JoinRequest): Promise<JoinResult> {
    const cfg = readBridgeConfig(req.config);
    const h = host();
    const ctr = deps.netlink(req.sandbox);
    const hostIf = req.hostIf;
    const mac = req.mac ?? randomMac(deps.randomHex);
    const hostMac = randomMac(deps.randomHex);
    const undo = new UndoStack();
    try {
      const pending = req.ensureNetwork === true ? await ensureUp(req.network, req.config) : [];
      // One host round trip: (gateway addresses,) the pair, its end on the bridge.
      const hostOps: NetlinkOp[] = [
        ...pending,
        { op: 'addVeth', name: hostIf, peer: req.ifName, peerNetns: req.sandbox, mac: hostMac, peerMac: mac, alias: endpointTag(req.network.owner), ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) },
        // enable_icc=false: isolated bridge ports cannot reach each other (frames between ports of
        // one bridge never reach netfilter without br_netfilter); the gateway stays reachable.
        { op: 'setLink', name: hostIf, changes: { master: cfg.bridge, up: true, ...(cfg.icc ? {} : { isolated: true }), ...(cfg.hairpin ? { hairpin: true } : {}) } },
      ];
      const results = await h.batch(hostOps);
      if (results[pending.length]?.ok === true) undo.push(`remove ${hostIf}`, () => h.removeLink(hostIf));
      const failed = results.find((r) => !r.ok);
      if (failed && !failed.ok) throw failed.error;
      const routes = routesFor(req);
      const inside: NetlinkOp[] = [
        ...req.addresses.map((prefix): NetlinkOp => ({ op: 'addAddr', dev: req.ifName, prefix, nodad: addrFamily(prefix) === 6 })),
        { op: 'setLink', name: req.ifName, changes: { up: true } },
        ...routes.map((route): NetlinkOp => ({ op: 'ensureRoute', route })),
      ];
      // An IPv4-only network gets no IPv6 on the container side (no link-local, no SLAAC from a
      // rogue router advertisement: Docker's CVE-2024-32473 fix); a dual-stack one does. One
      // sysctl process only when the interface does not already start in the wanted state.
      const wantV6 = req.network.subnets.some((s) => addrFamily(s.subnet) === 6) || req.addresses.some((a) => addrFamily(a) === 6);
      const offByDefault = req.ipv6OffByDefault === true;
      const v6Key = `net.ipv6.conf.${req.ifName.replaceAll('.', '/')}.disable_ipv6`;
      // IPv6 must be on before an IPv6 address can be added.
      if (wantV6 && offByDefault) await deps.sysctl(req.sandbox).set({ [v6Key]: 0 });
      const [inResults] = await Promise.all([
        ctr.batch(inside),
        !wantV6 && !offByDefault ? deps.sysctl(req.sandbox).set({ [v6Key]: 1 }) : Promise.resolve(),
      ]);
      const inFailed = inResults.find((r) => !r.ok);
      if (inFailed && !inFailed.ok) throw inFailed.error;
      // Into the sandbox: what leaves the host end. Out of it: what leaves the sandbox end.
      const bw = req.bandwidth;
      if (bw !== undefined) {
        await Promise.all([
          bw.ingress !== undefined ? deps.tc(deps.hostNs).shape(hostIf, bw.ingress) : undefined,
          bw.egress !== undefined ? deps.tc(req.sandbox).shape(req.ifName, bw.egress) : undefined,
        ]);
      }
      undo.commit();
      log.debug('joined', { network: req.network.id, endpoint: req.endpointId, hostIf });
      return { hostIf, hostMac, mac, routes, ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) };
    } catch (err) {
      await undo.unwind(log);
      throw wrap(`join ${req.endpointId} to ${req.network.name}`, err);
    }
  }

  async function joinHostPeer(req: HostPeerJoinRequest): Promise<JoinResult> {
    const cfg = readBridgeConfig(req.config);
    const h = host();
    const mac = req.mac ?? randomMac(deps.randomHex);
    const undo = new UndoStack();
    try {
      // One batch (one round trip): the pair, then its host end on the bridge.
      const [made, attached] = await h.batch([
        { op: 'addVeth', name: req.hostIf, peer: req.peerIf, peerMac: mac, alias: endpointTag(req.network.owner), ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) },
        { op: 'setLink', name: req.hostIf, changes: { master: cfg.bridge, up: true, ...(cfg.icc ? {} : { isolated: true }), ...(cfg.hairpin ? { hairpin: true } : {}) } },
      ]);
      if (made && !made.ok) throw made.error;
      undo.push(`remove ${req.hostIf}`, () => h.removeLink(req.hostIf));
      if (attached && !attached.ok) throw attached.error;
      undo.commit();
      log.debug('joined (peer left in the host namespace)', { network: req.network.id, endpoint: req.endpointId, hostIf: req.hostIf, peerIf: req.peerIf });
      return { hostIf: req.hostIf, mac, ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) };
    } catch (err) {
      await undo.unwind(log);
      throw wrap(`join ${req.endpointId} to ${req.network.name}`, err);
    }
  }

  async function leave(req: LeaveRequest): Promise<void> {
    if (req.hostIf === undefined) return;
    // Deleting the host end deletes the pair; the sandbox need not exist any more.
    await host().removeLink(req.hostIf);
  }

  async function publish(req: PublishRequest): Promise<void> {
    const cfg = readBridgeConfig(req.config);
    if (req.network.internal) {
      throw new TsnetError('INVALID_CONFIG', `publish: network ${req.network.name} is internal: it has no published ports`, { details: { field: 'publish' } });
    }
    await deps.firewall.ensurePorts(endpointPorts(req, cfg.bridge));
  }

  async function restore(req: RestoreRequest): Promise<RestoreResult> {
    const out: { networks: NetworkId[]; endpoints: EndpointId[] } = { networks: [], endpoints: [] };
    if (req.networks.length === 0 && req.ports.length === 0) return out;
    const [links, fw] = await Promise.all([host().listLinks(), deps.firewall.list()]);
    const up = new Set(links.filter((l) => l.kind === 'bridge' && l.up).map((l) => l.name as string));
    // A network another firewall blocks (its let-through rules in Docker's or the FORWARD chain,
    // or its firewalld binding, missing) is re-applied like one whose rules were flushed.
    const blocked = new Set<string>(fw.blocked ?? []);
    const ruled = new Set<string>(fw.networks.filter((id) => !blocked.has(id)));
    const published = new Set<string>(fw.endpoints);
    for (const { spec, config } of req.networks) {
      const cfg = readBridgeConfig(config);
      if (req.force !== true && up.has(cfg.bridge) && ruled.has(spec.id)) continue;
      await setUp(spec, config);
      out.networks.push(spec.id);
    }
    for (const p of req.ports) {
      if (req.force !== true && published.has(p.endpointId)) continue;
      await publish(p);
      out.endpoints.push(p.endpointId);
    }
    return out;
  }

  /** Host ends on the network's bridge that carry its tag and that `keep` does not name. */
  async function sweepEndpoints(spec: NetworkSpec, raw: DriverConfig, keep: ReadonlySet<string>): Promise<string[]> {
    const cfg = readBridgeConfig(raw);
    const h = host();
    const tag = endpointTag(spec.owner);
    const stale = (await h.listLinks()).filter((l) => l.master === cfg.bridge && l.alias === tag && !keep.has(l.name));
    await teardownAll(stale.map((l) => ({ label: l.name, run: () => h.removeLink(l.name) })));
    return stale.map((l) => l.name);
  }

  async function removeLeftovers(networkId: NetworkId, owner: OwnerTag): Promise<string[]> {
    const h = host();
    await deps.firewall.removeNetwork(networkId);
    // Ports first, then the bridge: only interfaces carrying exactly this network's tag.
    const ours = (await h.listLinks()).filter((l) => ownership(l, owner) === 'ours').sort((a, b) => Number(a.kind === 'bridge') - Number(b.kind === 'bridge'));
    await teardownAll(ours.map((l) => ({ label: l.name, run: () => h.removeLink(l.name) })));
    if (ours.length > 0) log.info('removed the interfaces of a network whose record was lost', { network: networkId, links: ours.map((l) => l.name) });
    return ours.map((l) => l.name);
  }

  async function isUnused(_spec: NetworkSpec, raw: DriverConfig): Promise<boolean> {
    const cfg = readBridgeConfig(raw);
    return !(await host().listLinks()).some((l) => l.master === cfg.bridge);
  }

  async function checkJoin(req: JoinRequest): Promise<string[]> {
    const cfg = readBridgeConfig(req.config);
    const problems: string[] = [];
    const [br, veth] = await Promise.all([host().getLink(cfg.bridge), host().getLink(req.hostIf)]);
    if (!br) problems.push(`bridge ${cfg.bridge} is missing`);
    if (!veth || veth.master !== cfg.bridge) problems.push(`host interface ${req.hostIf} is ${veth ? `not a port of ${cfg.bridge}` : 'missing'}`);
    const have = await deps.netlink(req.sandbox).listAddrs(req.ifName).catch(() => undefined);
    if (have === undefined) problems.push(`interface ${req.ifName} is missing in the sandbox`);
    else for (const p of req.addresses) if (!have.some((a) => a.prefix === p)) problems.push(`address ${p} is missing on ${req.ifName}`);
    return problems;
  }

  return {
    type: 'bridge',
    hasDataPath: true,
    restore,
    validateNetwork: (spec) => parseBridgeOptions(spec.id, spec.options),
    createNetwork: (spec, config) => setUp(spec, config),
    deleteNetwork,
    sweepEndpoints,
    removeLeftovers,
    isUnused,
    checkJoin,
    join,
    joinHostPeer,
    leave,
    publish,
    unpublish: (endpointId, published) => deps.firewall.removePorts(endpointId, published === undefined ? {} : { published: endpointPorts(published, readBridgeConfig(published.config).bridge) }),
  };
}
