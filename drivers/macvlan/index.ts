/**
 * The macvlan driver: each endpoint is a macvlan of the network's parent interface, created directly
 * in the sandbox under its final name, with its own MAC on the parent's link, so containers are
 * neighbours of the parent's LAN (and of each other, in `bridge` mode). No bridge, no NAT, no
 * published ports: the gateway is the LAN's router (`--gateway`, default the subnet's first address),
 * and an `--internal` network gets no default route. As with Docker's and the CNI plugin's macvlan,
 * the host itself cannot reach its macvlan containers through the parent (the kernel does not
 * deliver between a lower device and its macvlans).
 *
 * Nothing exists in the kernel per network: creating one only checks that the parent is there;
 * deleting one touches nothing. An endpoint goes with its sandbox; `leave` deletes it when the
 * sandbox is still there.
 */
import { TsnetError, wrap } from '../../core/errors.js';
import { addrFamily, type IfName } from '../../core/net.js';
import { UndoStack } from '../../core/undo.js';
import type { NetlinkOp } from '../../sys/netlink/api.js';
import type { DriverDeps, HostPeerJoinRequest, JoinRequest, JoinResult, LeaveRequest, NetworkDriver, NetworkSpec } from '../api.js';
import { randomMac, routesFor } from '../bridge/index.js';
import { parseMacvlanOptions, readMacvlanConfig } from './config.js';

export function createMacvlanDriver(deps: DriverDeps): NetworkDriver {
  const log = deps.log.child({ component: 'macvlan' });
  const host = () => deps.netlink(deps.hostNs);

  async function checkParent(spec: NetworkSpec, parent: IfName): Promise<void> {
    const link = await host().getLink(parent);
    if (link === undefined) {
      throw new TsnetError('NOT_FOUND', `option parent: ${parent}: no such interface on this host (a VLAN parent such as eth0.50 must exist: create it first)`, { details: { field: 'parent', value: parent } });
    }
    if (link.kind === 'bridge' || link.name === 'lo') {
      throw new TsnetError('INVALID_CONFIG', `option parent: ${parent} is a ${link.kind ?? 'loopback'} interface; a macvlan network sits on an Ethernet link (a NIC, a bond, a VLAN, a veth)`, { details: { field: 'parent', value: parent } });
    }
    log.debug('parent checked', { network: spec.id, parent });
  }

  async function join(req: JoinRequest): Promise<JoinResult> {
    const cfg = readMacvlanConfig(req.config);
    const mac = req.mac ?? randomMac(deps.randomHex);
    const ctr = deps.netlink(req.sandbox);
    const undo = new UndoStack();
    try {
      await host().addMacvlan({ name: req.ifName, parent: cfg.parent, mode: cfg.mode, netns: req.sandbox, mac, ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) })
        .catch((err: unknown) => {
          throw wrap(`macvlan on ${cfg.parent}`, err);
        });
      undo.push(`remove ${req.ifName}`, () => ctr.removeLink(req.ifName));
      const routes = routesFor(req);
      const wantV6 = req.network.subnets.some((s) => addrFamily(s.subnet) === 6);
      const offByDefault = req.ipv6OffByDefault === true;
      const v6Key = `net.ipv6.conf.${req.ifName.replaceAll('.', '/')}.disable_ipv6`;
      if (wantV6 && offByDefault) await deps.sysctl(req.sandbox).set({ [v6Key]: 0 });
      const inside: NetlinkOp[] = [
        ...req.addresses.map((prefix): NetlinkOp => ({ op: 'addAddr', dev: req.ifName, prefix, nodad: addrFamily(prefix) === 6 })),
        { op: 'setLink', name: req.ifName, changes: { up: true } },
        ...routes.map((route): NetlinkOp => ({ op: 'ensureRoute', route })),
      ];
      const [results] = await Promise.all([
        ctr.batch(inside),
        !wantV6 && !offByDefault ? deps.sysctl(req.sandbox).set({ [v6Key]: 1 }) : Promise.resolve(),
      ]);
      const failed = results.find((r) => !r.ok);
      if (failed && !failed.ok) throw failed.error;
      if (req.bandwidth?.egress !== undefined) await deps.tc(req.sandbox).shape(req.ifName, req.bandwidth.egress);
      if (req.bandwidth?.ingress !== undefined) {
        throw new TsnetError('INVALID_CONFIG', 'bandwidth: an ingress limit needs a host-side interface; a macvlan endpoint has none (limit egress only)', { details: { field: 'bandwidth' } });
      }
      undo.commit();
      log.debug('joined', { network: req.network.id, endpoint: req.endpointId, parent: cfg.parent });
      return { mac, routes, ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) };
    } catch (err) {
      await undo.unwind(log);
      throw wrap(`join ${req.endpointId} to ${req.network.name}`, err);
    }
  }

  /** A door that moves the interface itself (Docker): the macvlan is made in the host namespace as `peerIf`. */
  async function joinHostPeer(req: HostPeerJoinRequest): Promise<JoinResult> {
    const cfg = readMacvlanConfig(req.config);
    const mac = req.mac ?? randomMac(deps.randomHex);
    await host().addMacvlan({ name: req.peerIf, parent: cfg.parent, mode: cfg.mode, mac, ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) }).catch((err: unknown) => {
      throw wrap(`join ${req.endpointId} to ${req.network.name}: macvlan on ${cfg.parent}`, err);
    });
    return { mac, ...(cfg.mtu !== undefined ? { mtu: cfg.mtu } : {}) };
  }

  async function leave(req: LeaveRequest): Promise<void> {
    // In the sandbox: gone with it when it is gone (a remove in a missing namespace succeeds).
    await deps.netlink(req.sandbox).removeLink(req.ifName);
  }

  return {
    type: 'macvlan',
    hasDataPath: true,
    validateNetwork: (spec) => parseMacvlanOptions(spec.options),
    async createNetwork(spec, config) {
      await checkParent(spec, readMacvlanConfig(config).parent);
      return undefined;
    },
    deleteNetwork: async () => undefined,
    restore: async () => ({ networks: [], endpoints: [] }),
    isUnused: async () => true,
    async checkJoin(req) {
      const have = await deps.netlink(req.sandbox).listAddrs(req.ifName).catch(() => undefined);
      if (have === undefined) return [`interface ${req.ifName} is missing in the sandbox`];
      return req.addresses.filter((p) => !have.some((a) => a.prefix === p)).map((p) => `address ${p} is missing on ${req.ifName}`);
    },
    join,
    joinHostPeer,
    leave,
    async publish(req) {
      if (req.mappings.length === 0) return;
      throw new TsnetError('INVALID_CONFIG', `publish: network ${req.network.name} is a macvlan network: its containers are reached on their own addresses; nothing is published`, { details: { field: 'publish' } });
    },
    unpublish: async () => undefined,
  };
}
