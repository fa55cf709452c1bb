/**
 * The overlay driver: one subnet spanning the hosts of a cluster, as libnetwork's overlay. On each
 * host the network is the bridge driver's data path (a bridge with the gateway address, veths,
 * masquerade, isolation and published ports as intent to the firewall) plus a VXLAN device on that
 * bridge, sourced from the host's advertise address. The same gateway address is on every host's
 * bridge: containers reach the outside (and their published ports are reached) through their own
 * host, and ARP for the gateway never leaves the host, because nothing is flooded over VXLAN.
 *
 * No multicast and no learning: the VXLAN device has learning off and ARP proxy on, and the other
 * hosts' endpoints are installed from the cluster store (`syncPeers`): a permanent neighbour entry
 * (IP → MAC, which the device answers ARP requests with) and an FDB entry (MAC → the VTEP of the
 * host it runs on). So a frame for a remote container is sent to exactly one host, and a broadcast
 * stays on its bridge.
 *
 * MTU: 1450 by default (1500 minus VXLAN's 50 bytes over IPv4), or `-o mtu=N`; never more than the
 * underlay device's MTU minus 50.
 */
import { TsnetError, wrap } from '../../core/errors.js';
import type { IfName, IpAddr } from '../../core/net.js';
import type { DriverConfig, DriverDeps, NetworkDriver, NetworkSpec, Peer } from '../api.js';
import { createBridgeDriver } from '../bridge/index.js';
import { makeBridgeConfig } from '../bridge/config.js';
import { formatOwnerTag, ownership } from '../owner.js';
import { parseOverlayOptions, readOverlayConfig, VXLAN_OVERHEAD, type OverlayConfig } from './config.js';

export function createOverlayDriver(deps: DriverDeps): NetworkDriver {
  const log = deps.log.child({ component: 'overlay' });
  const bridge = createBridgeDriver(deps);
  const host = () => deps.netlink(deps.hostNs);
  const bridgePart = (c: OverlayConfig): DriverConfig =>
    makeBridgeConfig({ bridge: c.bridge, mtu: c.mtu, masquerade: c.masquerade, icc: c.icc, gateway: true, hairpin: true });

  const vtep = (): IpAddr => {
    if (deps.advertise === undefined) {
      throw new TsnetError('INVALID_CONFIG', 'driver overlay: this host has no advertise address (--cluster-advertise IP)', { details: { field: 'cluster-advertise' } });
    }
    return deps.advertise;
  };

  /** The MTU the underlay allows: its device's MTU minus the encapsulation. */
  async function mtuFor(c: OverlayConfig, local: IpAddr): Promise<number> {
    const h = host();
    const dev = (await h.listAddrs()).find((a) => a.prefix.startsWith(`${local}/`))?.dev;
    if (dev === undefined) throw new TsnetError('INVALID_CONFIG', `driver overlay: the advertise address ${local} is not on any interface of this host`, { details: { field: 'cluster-advertise', value: local } });
    const under = (await h.getLink(dev))?.mtu ?? 1500;
    return Math.min(c.mtu, under - VXLAN_OVERHEAD);
  }

  async function ensureVxlan(spec: NetworkSpec, c: OverlayConfig): Promise<void> {
    const h = host();
    const existing = await h.getLink(c.vxlan);
    if (existing !== undefined) {
      if (existing.kind !== 'vxlan' || ownership(existing, spec.owner) !== 'ours') {
        throw new TsnetError('ALREADY_EXISTS', `vxlan ${c.vxlan}: an interface of that name exists and is not this network's (nothing was changed)`, { details: { field: 'vxlan' } });
      }
      if (existing.master !== c.bridge || !existing.up) await h.setLink(c.vxlan, { master: c.bridge, up: true });
      return;
    }
    const local = vtep();
    await h.addVxlan({ name: c.vxlan, vni: c.vni, local, mtu: c.mtu });
    try {
      await h.setLink(c.vxlan, { alias: formatOwnerTag(spec.owner), master: c.bridge, up: true });
    } catch (err) {
      await h.removeLink(c.vxlan).catch(() => undefined);
      throw err;
    }
  }

  async function createNetwork(spec: NetworkSpec, raw: DriverConfig): Promise<DriverConfig | undefined> {
    const c0 = readOverlayConfig(raw);
    const mtu = await mtuFor(c0, vtep());
    const c = mtu === c0.mtu ? c0 : { ...c0, mtu };
    await bridge.createNetwork(spec, bridgePart(c));
    try {
      await ensureVxlan(spec, c);
    } catch (err) {
      await bridge.deleteNetwork(spec, bridgePart(c)).catch(() => undefined);
      throw wrap(`create overlay network ${spec.name}`, err);
    }
    log.info('overlay network ready', { network: spec.id, vni: c.vni, bridge: c.bridge, mtu: c.mtu });
    return mtu === c0.mtu ? undefined : { ...c };
  }

  async function deleteNetwork(spec: NetworkSpec, raw: DriverConfig): Promise<void> {
    const c = readOverlayConfig(raw);
    const h = host();
    const vx = await h.getLink(c.vxlan);
    if (vx !== undefined && ownership(vx, spec.owner) === 'ours') await h.removeLink(c.vxlan);
    await bridge.deleteNetwork(spec, bridgePart(c));
  }

  async function syncPeers(spec: NetworkSpec, raw: DriverConfig, peers: readonly Peer[]): Promise<{ added: number; removed: number }> {
    const c = readOverlayConfig(raw);
    const h = host();
    const dev: IfName = c.vxlan;
    const [neighs, fdb] = await Promise.all([h.listNeighs(dev), h.listFdb(dev)]);
    const wantNeigh = new Map(peers.map((p) => [p.ip as string, p.mac]));
    const wantFdb = new Map(peers.map((p) => [p.mac as string, p.vtep]));
    const ops = [
      ...peers.filter((p) => !neighs.some((x) => x.ip === p.ip && x.mac === p.mac)).map((p) => ({ op: 'ensureNeigh' as const, dev, ip: p.ip, mac: p.mac })),
      ...peers.filter((p) => !fdb.some((x) => x.mac === p.mac && x.dst === p.vtep)).map((p) => ({ op: 'ensureFdb' as const, dev, mac: p.mac, dst: p.vtep })),
    ];
    const gone = [
      ...neighs.filter((x) => wantNeigh.get(x.ip) === undefined).map((x) => ({ op: 'removeNeigh' as const, dev, ip: x.ip })),
      ...fdb.filter((x) => wantFdb.get(x.mac) !== x.dst && !peers.some((p) => p.mac === x.mac)).map((x) => ({ op: 'removeFdb' as const, dev, mac: x.mac, dst: x.dst })),
    ];
    if (ops.length + gone.length === 0) return { added: 0, removed: 0 };
    const results = await h.batch([...gone, ...ops]);
    const failed = results.find((r) => !r.ok);
    if (failed && !failed.ok) throw wrap(`peers of overlay network ${spec.name}`, failed.error);
    log.debug('peers synced', { network: spec.id, added: ops.length, removed: gone.length });
    return { added: ops.length, removed: gone.length };
  }

  return {
    type: 'overlay',
    scope: 'cluster',
    hasDataPath: true,
    validateNetwork: (spec) => parseOverlayOptions(spec.id, spec.options),
    createNetwork,
    deleteNetwork,
    async restore(req) {
      const r = await bridge.restore({ ...req, networks: req.networks.map((n) => ({ spec: n.spec, config: bridgePart(readOverlayConfig(n.config)) })), ports: req.ports.map((p) => ({ ...p, config: bridgePart(readOverlayConfig(p.config)) })) });
      const links = await host().listLinks();
      for (const n of req.networks) {
        const c = readOverlayConfig(n.config);
        if (links.some((l) => l.name === c.vxlan && l.up && l.master === c.bridge) && req.force !== true) continue;
        await ensureVxlan(n.spec, c);
        if (!r.networks.includes(n.spec.id)) r.networks.push(n.spec.id);
      }
      return r;
    },
    isUnused: (spec, raw) => bridge.isUnused?.(spec, bridgePart(readOverlayConfig(raw))) ?? Promise.resolve(true),
    async checkJoin(req) {
      return (await bridge.checkJoin?.({ ...req, config: bridgePart(readOverlayConfig(req.config)) })) ?? [];
    },
    join: (req) => bridge.join({ ...req, config: bridgePart(readOverlayConfig(req.config)) }),
    leave: (req) => bridge.leave({ ...req, config: bridgePart(readOverlayConfig(req.config)) }),
    publish: (req) => bridge.publish({ ...req, config: bridgePart(readOverlayConfig(req.config)) }),
    unpublish: (id, published) => bridge.unpublish(id, published === undefined ? undefined : { ...published, config: bridgePart(readOverlayConfig(published.config)) }),
    syncPeers,
  };
}
