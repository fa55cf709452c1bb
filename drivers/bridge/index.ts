/**
 * The bridge driver: a Linux bridge per network with the gateway address(es) on it, a veth pair per
 * endpoint (the container end created directly in the sandbox under its final name), masquerade and
 * isolation stated as intent to the firewall.
 */
import { TsnetError, wrap } from '../../core/errors.js';
import { addrFamily, makePrefix, prefixLen, type EndpointId, type IfName, type MacAddr, type NetworkId, type Prefix } from '../../core/net.js';
import { teardownAll } from '../../core/teardown.js';
import { UndoStack } from '../../core/undo.js';
import type { NetlinkOp } from '../../sys/netlink/api.js';
import type { DriverDeps, HostPeerJoinRequest, JoinRequest, JoinResult, LeaveRequest, NetworkDriver, NetworkSpec, PublishRequest, RestoreRequest, RestoreResult } from '../api.js';
import { parseBridgeOptions, readBridgeConfig } from './config.js';

const DEFAULT_ROUTE: Record<4 | 6, Prefix> = { 4: '0.0.0.0/0' as Prefix, 6: '::/0' as Prefix };

/** A random, locally administered, unicast MAC address. */
export function randomMac(randomHex: (bytes: number) => string): MacAddr {
  const hex = `02${randomHex(5)}`;
  return hex.match(/../g)?.join(':') as MacAddr;
}

export function hostIfName(randomHex: (bytes: number) => string): IfName {
  return `veth${randomHex(4).slice(0, 7)}` as IfName;
}

export function createBridgeDriver(deps: DriverDeps): NetworkDriver {
  const log = deps.log.child({ component: 'bridge' });

  async function createNetwork(spec: NetworkSpec, raw: Readonly<Record<string, unknown>>): Promise<void> {
    const cfg = readBridgeConfig(raw);
    const host = deps.netlink(deps.hostNs);
    const undo = new UndoStack();
    try {
      const existing = await host.getLink(cfg.bridge);
      if (existing && existing.kind !== 'bridge') {
        throw new TsnetError('ALREADY_EXISTS', `bridge name ${cfg.bridge}: a ${existing.kind ?? 'non-bridge'} interface of that name exists`, { details: { field: 'bridge' } });
      }
      if (!existing) {
        // A fixed MAC: a bridge without one takes the lowest MAC of its ports, so removing a
        // container could change the gateway's MAC under the other containers' ARP caches and cut
        // them off from the gateway (and the resolver on it) until their entries expire.
        await host.addBridge(cfg.bridge, { mac: randomMac(deps.randomHex), ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) });
        undo.push(`remove bridge ${cfg.bridge}`, () => host.removeLink(cfg.bridge));
      }
      const ops: NetlinkOp[] = spec.subnets.map((s) => ({
        op: 'ensureAddr',
        dev: cfg.bridge,
        prefix: makePrefix(s.gateway, prefixLen(s.subnet)),
        nodad: addrFamily(s.subnet) === 6,
      }));
      ops.push({ op: 'setLink', name: cfg.bridge, changes: { up: true } });
      const results = await host.batch(ops);
      const failed = results.find((r) => !r.ok);
      if (failed && !failed.ok) throw failed.error;
      const families = new Set(spec.subnets.map((s) => addrFamily(s.subnet)));
      if (!spec.internal) {
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
      await deps.firewall.ensureNetwork({
        networkId: spec.id,
        bridge: cfg.bridge,
        subnets: spec.subnets.map((s) => s.subnet),
        masquerade: cfg.masquerade && !spec.internal,
        internal: spec.internal,
        icc: cfg.icc,
      });
      undo.commit();
      log.info('network ready', { network: spec.id, bridge: cfg.bridge });
    } catch (err) {
      await undo.unwind(log);
      throw wrap(`create bridge network ${spec.name}`, err);
    }
  }

  async function deleteNetwork(spec: NetworkSpec, raw: Readonly<Record<string, unknown>>): Promise<void> {
    const cfg = readBridgeConfig(raw);
    const host = deps.netlink(deps.hostNs);
    await teardownAll([
      { label: `firewall of ${spec.id}`, run: () => deps.firewall.removeNetwork(spec.id) },
      { label: `bridge ${cfg.bridge}`, run: () => host.removeLink(cfg.bridge) },
    ]).catch((err: unknown) => {
      throw wrap(`delete bridge network ${spec.name}`, err);
    });
    log.info('network removed', { network: spec.id, bridge: cfg.bridge });
  }

  async function join(req: JoinRequest): Promise<JoinResult> {
    const cfg = readBridgeConfig(req.config);
    const host = deps.netlink(deps.hostNs);
    const ctr = deps.netlink(req.sandbox);
    const hostIf = req.hostIf;
    const mac = req.mac ?? randomMac(deps.randomHex);
    const undo = new UndoStack();
    try {
      await host.addVeth({
        name: hostIf,
        peer: req.ifName,
        peerNetns: req.sandbox,
        peerMac: mac,
        ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}),
      });
      undo.push(`remove ${hostIf}`, () => host.removeLink(hostIf));
      const families = new Set(req.network.subnets.map((s) => addrFamily(s.subnet)));
      const inside: NetlinkOp[] = [
        ...req.addresses.map((prefix): NetlinkOp => ({ op: 'addAddr', dev: req.ifName, prefix, nodad: addrFamily(prefix) === 6 })),
        { op: 'setLink', name: req.ifName, changes: { up: true } },
      ];
      if (req.defaultRoute && !req.network.internal) {
        for (const s of req.network.subnets) {
          inside.push({ op: 'ensureRoute', route: { dst: DEFAULT_ROUTE[addrFamily(s.subnet)], via: s.gateway, dev: req.ifName } });
        }
      }
      // An IPv4-only network gets no IPv6 on the container side (no link-local, no SLAAC from a
      // rogue router advertisement: Docker's CVE-2024-32473 fix); a dual-stack one does. One
      // sysctl process only when the interface does not already start in the wanted state.
      const wantV6 = families.has(6);
      const offByDefault = req.ipv6OffByDefault === true;
      const v6Key = `net.ipv6.conf.${req.ifName}.disable_ipv6`;
      // IPv6 must be on before an IPv6 address can be added.
      if (wantV6 && offByDefault) await deps.sysctl(req.sandbox).set({ [v6Key]: 0 });
      const [, results] = await Promise.all([
        // enable_icc=false: isolated bridge ports cannot reach each other (frames between ports of
        // one bridge never reach netfilter without br_netfilter); the gateway stays reachable.
        host.setLink(hostIf, { master: cfg.bridge, up: true, ...(cfg.icc ? {} : { isolated: true }) }),
        ctr.batch(inside),
        !wantV6 && !offByDefault ? deps.sysctl(req.sandbox).set({ [v6Key]: 1 }) : Promise.resolve(),
      ]);
      const failed = results.find((r) => !r.ok);
      if (failed && !failed.ok) throw failed.error;
      undo.commit();
      log.debug('joined', { network: req.network.id, endpoint: req.endpointId, hostIf });
      return { hostIf, mac, ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) };
    } catch (err) {
      await undo.unwind(log);
      throw wrap(`join ${req.endpointId} to ${req.network.name}`, err);
    }
  }

  async function joinHostPeer(req: HostPeerJoinRequest): Promise<JoinResult> {
    const cfg = readBridgeConfig(req.config);
    const host = deps.netlink(deps.hostNs);
    const mac = req.mac ?? randomMac(deps.randomHex);
    const undo = new UndoStack();
    try {
      // One batch (one round trip): the pair, then its host end on the bridge.
      const [made, attached] = await host.batch([
        { op: 'addVeth', name: req.hostIf, peer: req.peerIf, peerMac: mac, ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) },
        { op: 'setLink', name: req.hostIf, changes: { master: cfg.bridge, up: true, ...(cfg.icc ? {} : { isolated: true }) } },
      ]);
      if (made && !made.ok) throw made.error;
      undo.push(`remove ${req.hostIf}`, () => host.removeLink(req.hostIf));
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
    await deps.netlink(deps.hostNs).removeLink(req.hostIf);
  }

  async function publish(req: PublishRequest): Promise<void> {
    const cfg = readBridgeConfig(req.config);
    if (req.network.internal) {
      throw new TsnetError('INVALID_CONFIG', `publish: network ${req.network.name} is internal: it has no published ports`, { details: { field: 'publish' } });
    }
    await deps.firewall.ensurePorts({ endpointId: req.endpointId, networkId: req.network.id, bridge: cfg.bridge, mappings: req.mappings });
  }

  async function restore(req: RestoreRequest): Promise<RestoreResult> {
    const out: { networks: NetworkId[]; endpoints: EndpointId[] } = { networks: [], endpoints: [] };
    if (req.networks.length === 0 && req.ports.length === 0) return out;
    const host = deps.netlink(deps.hostNs);
    const [links, fw] = await Promise.all([host.listLinks(), deps.firewall.list()]);
    const up = new Set(links.filter((l) => l.kind === 'bridge' && l.up).map((l) => l.name as string));
    const ruled = new Set<string>(fw.networks);
    const published = new Set<string>(fw.endpoints);
    for (const { spec, config } of req.networks) {
      const cfg = readBridgeConfig(config);
      if (req.force !== true && up.has(cfg.bridge) && ruled.has(spec.id)) continue;
      await createNetwork(spec, config);
      out.networks.push(spec.id);
    }
    for (const p of req.ports) {
      if (req.force !== true && published.has(p.endpointId)) continue;
      await publish(p);
      out.endpoints.push(p.endpointId);
    }
    return out;
  }

  return {
    type: 'bridge',
    hasDataPath: true,
    restore,
    validateNetwork: (spec) => parseBridgeOptions(spec.id, spec.options),
    createNetwork,
    deleteNetwork,
    join,
    joinHostPeer,
    leave,
    publish,
    unpublish: (endpointId) => deps.firewall.removePorts(endpointId),
  };
}
