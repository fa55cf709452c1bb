/**
 * The controller sequences validate → allocate → driver → persist → files for every operation and
 * undoes what it did when a step fails. It holds no kernel code and no state: records are re-read by
 * id from the state port on every call. Records are written with status "creating" before the
 * kernel is touched, so `reconcile` can finish or undo whatever a crash interrupted.
 */
import { TsnetError, wrap } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import {
  addrFamily, parseIpAddr, parseMac, prefixAddr,
  type EndpointId, type Family, type IfName, type IpAddr, type NetnsRef, type NetworkId, type Prefix, type SandboxId,
} from '../core/net.js';
import { teardownAll } from '../core/teardown.js';
import { UndoStack } from '../core/undo.js';
import type { DriverConfig, NetworkDriver, NetworkSpec } from '../drivers/api.js';
import type { DriverRegistry } from '../drivers/registry.js';
import type { Ipam, PoolRecord } from '../ipam/api.js';
import type { NetlinkCache } from '../sys/netlink/api.js';
import type { NetnsManager } from '../sys/netns.js';
import type { PortMapping } from '../sys/firewall/api.js';
import type { HostPorts } from '../sys/host-ports.js';
import { resolverAddress } from './dns.js';
import { checkName, networkHasDns, type EndpointRecord, type NetworkRecord, type SandboxRecord } from './model.js';
import { assignHostPorts, type HostBinding } from './ports.js';
import type { CnmState } from './state.js';

export interface SandboxFiles {
  /** The directory for a sandbox's files (hosts, resolv.conf). */
  dirFor(id: SandboxId): string;
  write(path: string, content: string): Promise<void>;
  /** Removes the directory; succeeds if it is gone. */
  removeDir(dir: string): Promise<void>;
}

export interface ControllerDeps {
  readonly state: CnmState;
  readonly ipam: Ipam;
  readonly drivers: DriverRegistry;
  readonly netns: NetnsManager;
  readonly hostNs: NetnsRef;
  readonly netlink: NetlinkCache;
  /** Sockets host processes listen on and the ephemeral port range, in `hostNs`. */
  readonly hostPorts: HostPorts;
  readonly files: SandboxFiles;
  /**
   * The container's resolv.conf for the given options (dns/resolv-conf.ts over the host's files);
   * `embedded`: the embedded resolver's address on the container's network, when it serves it.
   */
  readonly resolvConf: (opts: { readonly dns: readonly IpAddr[]; readonly dnsSearch: readonly string[]; readonly dnsOptions: readonly string[]; readonly embedded?: IpAddr }) => Promise<string>;
  /** The container's /etc/hosts (dns/hosts-file.ts). */
  readonly hostsFile: (self: readonly { ip: IpAddr; names: string[] }[], extra: readonly { ip: IpAddr; names: string[] }[]) => string;
  readonly log: Logger;
  readonly randomHex: (bytes: number) => string;
  readonly now: () => Date;
  /**
   * Called after a mutation succeeded, holding no lock (the embedded DNS daemon reloads from the
   * records and acks, so a new container resolves when `run` returns). Failures are logged only:
   * the mutation is done.
   */
  readonly onChange?: (e: CnmChange) => Promise<void>;
}

/** What changed in the records (for the DNS daemon, and later other listeners). */
export interface CnmChange {
  readonly kind: 'network-created' | 'network-deleted' | 'connected' | 'disconnected' | 'sandbox-deleted';
  readonly networkIds: readonly NetworkId[];
  /** Whether one of those networks is served by the embedded resolver. */
  readonly dns: boolean;
}

export interface SubnetRequest {
  readonly subnet?: string;
  readonly gateway?: string;
  readonly ipRange?: string;
  readonly auxAddresses?: Readonly<Record<string, string>>;
}

export interface CreateNetworkRequest {
  readonly name: string;
  readonly driver?: string;
  readonly subnets?: readonly SubnetRequest[];
  readonly ipv6?: boolean;
  readonly internal?: boolean;
  readonly options?: Readonly<Record<string, string>>;
  readonly labels?: Readonly<Record<string, string>>;
  /** false: no embedded DNS on this network (`--disable-dns`). */
  readonly dnsEnabled?: boolean;
}

export type NetworkMode =
  | { readonly kind: 'network'; readonly network: string }
  | { readonly kind: 'host' }
  | { readonly kind: 'none' }
  | { readonly kind: 'container'; readonly target: string };

export interface CreateSandboxRequest {
  readonly id?: string;
  readonly name: string;
  readonly hostname?: string;
  readonly mode: NetworkMode;
  readonly extraHosts?: readonly { ip: string; names: string[] }[];
  readonly dns?: readonly string[];
  readonly dnsSearch?: readonly string[];
  readonly dnsOptions?: readonly string[];
  /** With mode "network": how to connect to it (static IP, aliases, MAC, published ports). */
  readonly connect?: ConnectRequest;
}

/** A port to publish; the container address is the endpoint's (of the host address's family). */
export interface PortRequest {
  readonly proto: PortMapping['proto'];
  /** Undefined: every local address, IPv4 and (on a dual-stack network) IPv6. */
  readonly hostIp?: IpAddr;
  /** Undefined: a free block as long as the container range, from `within` or the kernel's local port range. */
  readonly hostPort?: PortMapping['hostPort'];
  readonly within?: PortMapping['hostPort'];
  readonly containerPort: PortMapping['containerPort'];
}

export interface ConnectRequest {
  readonly ip?: string;
  readonly ip6?: string;
  readonly aliases?: readonly string[];
  readonly mac?: string;
  readonly ports?: readonly PortRequest[];
}

export interface NetworkDetails {
  readonly network: NetworkRecord;
  readonly endpoints: readonly (EndpointRecord & { readonly sandboxName: string })[];
}

/** Where the sandbox's processes must run: its namespace and its files. */
export interface SandboxHandle {
  readonly record: SandboxRecord;
  readonly netns: NetnsRef;
}

export const DEFAULT_BRIDGE = 'tsnet0';
const FULL_ID = /^[0-9a-f]{64}$/;
const PREDEFINED = ['bridge', 'host', 'none'] as const;

function conflict(msg: string, details: Record<string, unknown> = {}): TsnetError {
  return new TsnetError('ALREADY_EXISTS', msg, { details });
}
function notFound(what: string, name: string, field: string): TsnetError {
  return new TsnetError('NOT_FOUND', `${what} ${name} not found`, { details: { field, value: name } });
}
function invalid(field: string, msg: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: ${msg}`, { details: { field } });
}

export function netnsOf(sb: SandboxRecord): NetnsRef {
  return sb.netns.kind === 'host' ? { kind: 'host' } : { kind: 'path', path: sb.netns.path };
}

/** A mapping record (validated on read) as the firewall's type. */
function mappingOf(m: EndpointRecord['ports'][number]): PortMapping {
  return {
    proto: m.proto, ...(m.hostIp !== undefined ? { hostIp: m.hostIp } : {}), containerIp: m.containerIp,
    hostPort: m.hostPort as PortMapping['hostPort'], containerPort: m.containerPort as PortMapping['containerPort'],
  };
}

export function specOf(n: NetworkRecord): NetworkSpec {
  return {
    id: n.id,
    name: n.name,
    subnets: n.subnets.map((s) => ({ subnet: s.subnet, gateway: s.gateway })),
    internal: n.internal,
    options: n.options,
  };
}

export interface Controller {
  ensurePredefined(): Promise<void>;
  createNetwork(req: CreateNetworkRequest): Promise<NetworkRecord>;
  deleteNetwork(idOrName: string): Promise<void>;
  /** Removes every network without endpoints that is not predefined; returns their names. */
  pruneNetworks(): Promise<string[]>;
  listNetworks(): Promise<NetworkRecord[]>;
  findNetwork(idOrName: string): Promise<NetworkRecord>;
  inspectNetwork(idOrName: string): Promise<NetworkDetails>;
  createSandbox(req: CreateSandboxRequest): Promise<SandboxHandle>;
  findSandbox(idOrName: string): Promise<SandboxRecord>;
  listSandboxes(): Promise<SandboxRecord[]>;
  endpointsOf(sandboxId: SandboxId): Promise<EndpointRecord[]>;
  connect(sandbox: string, network: string, req?: ConnectRequest): Promise<EndpointRecord>;
  disconnect(sandbox: string, network: string): Promise<void>;
  deleteSandbox(idOrName: string): Promise<void>;
  /** Finishes or undoes what a crash interrupted and restores networks and published ports in the kernel. */
  reconcile(): Promise<{ readonly cleaned: string[]; readonly restored: string[] }>;
  /**
   * Re-applies every network's firewall policy and every published port from the records (after an
   * admin or a firewall manager flushed rules); returns the names of the networks and the ids of
   * the endpoints it applied. `force` (default true): whatever the kernel shows; false: only what
   * the kernel lacks (the daemon's watcher).
   */
  reloadFirewall(opts?: { readonly force?: boolean }): Promise<{ readonly networks: string[]; readonly endpoints: string[] }>;
}

export function createController(deps: ControllerDeps): Controller {
  const { state, ipam, drivers, log } = deps;
  const now = (): string => deps.now().toISOString();
  const newId = (): string => deps.randomHex(32);
  async function notify(kind: CnmChange['kind'], nets: readonly NetworkRecord[]): Promise<void> {
    if (!deps.onChange) return;
    await deps.onChange({ kind, networkIds: nets.map((n) => n.id), dns: nets.some(networkHasDns) }).catch((err: unknown) => {
      log.warn('change notification failed', { kind, err: err instanceof Error ? err.message : String(err) });
    });
  }

  async function findNetwork(idOrName: string): Promise<NetworkRecord> {
    if (FULL_ID.test(idOrName)) {
      const byId = await state.networks.get(idOrName);
      if (byId) return byId;
    }
    const all = await state.networks.list();
    const hit = all.find((n) => n.name === idOrName) ?? all.find((n) => n.id === idOrName) ?? all.filter((n) => idOrName.length >= 3 && n.id.startsWith(idOrName)).at(0);
    if (!hit) throw notFound('network', idOrName, 'network');
    return hit;
  }

  async function findSandbox(idOrName: string): Promise<SandboxRecord> {
    if (FULL_ID.test(idOrName)) {
      const byId = await state.sandboxes.get(idOrName);
      if (byId) return byId;
    }
    const all = await state.sandboxes.list();
    const hit = all.find((s) => s.name === idOrName) ?? all.find((s) => s.id === idOrName) ?? all.filter((s) => idOrName.length >= 3 && s.id.startsWith(idOrName)).at(0);
    if (!hit) throw notFound('container', idOrName, 'container');
    return hit;
  }

  // Endpoint ids start with their sandbox's id prefix, so a sandbox's endpoints are listed without
  // reading every endpoint record.
  const endpointPrefix = (sandboxId: SandboxId): string => sandboxId.slice(0, 16);
  const endpointsOf = async (sandboxId: SandboxId): Promise<EndpointRecord[]> =>
    (await state.endpoints.list(endpointPrefix(sandboxId))).filter((e) => e.sandboxId === sandboxId).sort((a, b) => a.ifName.localeCompare(b.ifName, 'en', { numeric: true }));

  async function writeFiles(sb: SandboxRecord, known?: readonly EndpointRecord[]): Promise<void> {
    if (sb.netns.kind === 'container') return; // shares the target's files
    const eps = known ?? (await endpointsOf(sb.id));
    const self = eps.flatMap((e) => e.addresses.map((a) => ({ ip: prefixAddr(a), names: [sb.hostname] })));
    await deps.files.write(sb.hostsPath, deps.hostsFile(self, sb.extraHosts));
  }

  async function createNetworkLocked(req: CreateNetworkRequest, predefined: boolean): Promise<NetworkRecord> {
    const name = checkName(req.name, 'name');
    const driverType = req.driver ?? 'bridge';
    const driver = drivers(driverType);
    if (!predefined && (PREDEFINED as readonly string[]).includes(name)) throw conflict(`network name ${name}: ${name} is a pre-defined network name`, { field: 'name' });
    if (!predefined && driver.type !== 'bridge') throw invalid('driver', `only one instance of "${driver.type}" network is allowed`);
    const existing = await state.networks.list();
    if (existing.some((n) => n.name === name)) throw conflict(`network with name ${name} already exists`, { field: 'name' });
    const id = newId() as NetworkId;
    const subnetReqs = driver.hasDataPath ? [...(req.subnets ?? [])] : [];
    if (!driver.hasDataPath && (req.subnets?.length ?? 0) > 0) throw invalid('subnet', `the ${driver.type} driver has no subnets`);
    // Validate every subnet request's shape before allocating anything.
    const families: Family[] = subnetReqs.map((s, i) => {
      if (s.subnet === undefined) throw invalid(`subnet[${i}]`, 'gateway/ip-range/aux-address need a subnet');
      return s.subnet.includes(':') ? 6 : 4;
    });
    const ipv6 = req.ipv6 === true || families.includes(6);
    const options = { ...(req.options ?? {}) };
    const provisional: NetworkSpec = { id, name, subnets: [], internal: req.internal === true, options };
    const config: DriverConfig = driver.validateNetwork(provisional);
    const record: NetworkRecord = {
      schemaVersion: 1, id, name, driver: driver.type, created: now(), status: 'creating', internal: req.internal === true, ipv6,
      predefined, subnets: [], options, labels: { ...(req.labels ?? {}) }, config: { ...config },
      ...(req.dnsEnabled === false ? { dnsEnabled: false } : {}),
    };
    const undo = new UndoStack();
    try {
      await state.networks.create(record);
      undo.push('delete network record', () => state.networks.delete(id));
      const pools: PoolRecord[] = [];
      if (driver.hasDataPath) {
        undo.push('release pools', () => ipam.releasePool(id));
        for (const s of subnetReqs) {
          pools.push(await ipam.requestPool({
            networkId: id, networkName: name, ...(s.subnet !== undefined ? { subnet: s.subnet } : {}),
            ...(s.gateway !== undefined ? { gateway: s.gateway } : {}), ...(s.ipRange !== undefined ? { ipRange: s.ipRange } : {}),
            ...(s.auxAddresses !== undefined ? { auxAddresses: s.auxAddresses } : {}),
          }));
        }
        if (!families.includes(4)) pools.unshift(await ipam.requestPool({ networkId: id, networkName: name, family: 4 }));
        if (ipv6 && !families.includes(6)) pools.push(await ipam.requestPool({ networkId: id, networkName: name, family: 6 }));
      }
      const withSubnets: NetworkRecord = {
        ...record,
        subnets: pools.map((p) => ({
          subnet: p.subnet, gateway: p.gateway, ...(p.ipRange !== undefined ? { ipRange: p.ipRange } : {}),
          ...(Object.keys(p.auxAddresses).length > 0 ? { auxAddresses: p.auxAddresses } : {}),
        })),
      };
      await state.networks.put(withSubnets);
      undo.push('driver delete network', () => driver.deleteNetwork(specOf(withSubnets), config));
      await driver.createNetwork(specOf(withSubnets), config);
      const ready: NetworkRecord = { ...withSubnets, status: 'ready' };
      await state.networks.put(ready);
      undo.commit();
      log.info('network created', { network: id, name, driver: driver.type, subnets: ready.subnets.map((s) => s.subnet) });
      return ready;
    } catch (err) {
      await undo.unwind(log);
      throw wrap(`create network ${name}`, err);
    }
  }

  async function removeNetworkEverywhere(n: NetworkRecord, driver: NetworkDriver): Promise<void> {
    await teardownAll([
      { label: 'driver', run: () => driver.deleteNetwork(specOf(n), n.config) },
      { label: 'ipam', run: () => (driver.hasDataPath ? ipam.releasePool(n.id) : Promise.resolve()) },
      { label: 'record', run: () => state.networks.delete(n.id) },
    ]);
  }

  async function teardownEndpoint(ep: EndpointRecord, sandboxNs: NetnsRef): Promise<void> {
    const net = await state.networks.get(ep.networkId);
    const steps = [];
    if (net) {
      const driver = drivers(net.driver);
      steps.push(
        { label: `unpublish ${ep.id}`, run: () => (ep.ports.length > 0 ? driver.unpublish(ep.id) : Promise.resolve()) },
        {
          label: `leave ${ep.id}`,
          run: () => driver.leave({ network: specOf(net), config: net.config, endpointId: ep.id, sandbox: sandboxNs, ifName: ep.ifName, ...(ep.hostIf !== undefined ? { hostIf: ep.hostIf } : {}) }),
        },
      );
    }
    steps.push(
      // iproute2 caches interface names per process: after the pair is gone, a fresh ip process
      // for the sandbox, so that a later eth<N> of the same name is resolved anew.
      { label: `netlink handle of ${ep.id}`, run: () => (sandboxNs.kind === 'path' ? deps.netlink.release(sandboxNs) : Promise.resolve()) },
      { label: `release addresses of ${ep.id}`, run: () => ipam.releaseOwner(ep.id, { networkId: ep.networkId }) },
      { label: `endpoint record ${ep.id}`, run: () => state.endpoints.delete(ep.id) },
    );
    await teardownAll(steps);
  }

  async function connectLocked(sb: SandboxRecord, net: NetworkRecord, req: ConnectRequest): Promise<{ endpoint: EndpointRecord; others: EndpointRecord[] }> {
    if (sb.netns.kind !== 'own') {
      throw invalid('network', sb.netns.kind === 'host' ? 'container cannot be disconnected from host network or connected to host network' : 'conflicting options: container type network can\'t be used with multiple networks');
    }
    const driver = drivers(net.driver);
    if (!driver.hasDataPath) throw invalid('network', `container cannot be connected to the ${net.driver} network`);
    if (net.status !== 'ready') throw new TsnetError('UNAVAILABLE', `network ${net.name} is being created or removed`);
    const eps = await endpointsOf(sb.id);
    if (eps.some((e) => e.networkId === net.id)) throw conflict(`endpoint with name ${sb.name} already exists in network ${net.name}`, { field: 'network' });
    // Validate the request fully before anything is allocated.
    const ip4 = req.ip !== undefined ? parseIpAddr(req.ip, 'ip') : undefined;
    const ip6 = req.ip6 !== undefined ? parseIpAddr(req.ip6, 'ip6') : undefined;
    if (ip4 !== undefined && addrFamily(ip4) !== 4) throw invalid('ip', `${ip4} is not an IPv4 address (use --ip6)`);
    if (ip6 !== undefined && addrFamily(ip6) !== 6) throw invalid('ip6', `${ip6} is not an IPv6 address`);
    const fams = new Set(net.subnets.map((s) => addrFamily(s.subnet)));
    if (ip4 !== undefined && !fams.has(4)) throw invalid('ip', `network ${net.name} has no IPv4 subnet`);
    if (ip6 !== undefined && !fams.has(6)) throw invalid('ip6', `network ${net.name} has no IPv6 subnet`);
    const mac = req.mac !== undefined ? parseMac(req.mac, 'mac-address') : undefined;
    for (const a of req.aliases ?? []) checkName(a, 'network-alias');
    if ((req.ports?.length ?? 0) > 0 && net.internal) throw invalid('publish', `network ${net.name} is internal: ports cannot be published`);
    // Refuse a taken host port, a busy one or a foreign host address before anything changes; the
    // ports lock below decides for good (another run may publish meanwhile).
    if ((req.ports?.length ?? 0) > 0) await grantPorts(req.ports ?? [], net, undefined);
    const used = new Set<string>(eps.map((e) => e.ifName));
    let n = 0;
    while (used.has(`eth${n}`)) n++;
    const ifName = `eth${n}` as IfName;
    const id = `${endpointPrefix(sb.id)}${deps.randomHex(24)}` as EndpointId;
    const hostIf = `veth${deps.randomHex(4).slice(0, 7)}` as IfName;
    const defaultRoute = !net.internal && !eps.some((e) => e.defaultRoute);
    const record: EndpointRecord = {
      schemaVersion: 1, id, networkId: net.id, sandboxId: sb.id, created: now(), status: 'creating', ifName, hostIf,
      ...(mac !== undefined ? { mac } : {}), addresses: [], aliases: [...(req.aliases ?? [])], defaultRoute, ports: [],
    };
    const sandboxNs = netnsOf(sb);
    const undo = new UndoStack();
    try {
      // The record first: reconcile's IPAM gc releases reservations whose owner has no record, so
      // an address is only ever reserved for an endpoint whose record already exists.
      await state.endpoints.create(record);
      undo.push('endpoint record', () => state.endpoints.delete(id));
      undo.push('release addresses', () => ipam.releaseOwner(id, { networkId: net.id }));
      const addresses: Prefix[] = [];
      for (const s of net.subnets) {
        const fam = addrFamily(s.subnet);
        const want = fam === 4 ? ip4 : ip6;
        const a = await ipam.requestAddress({ networkId: net.id, owner: id, family: fam, ...(want !== undefined ? { ip: want } : {}) });
        addresses.push(a.address);
      }
      // No write here: until "ready", cleanup needs only the record's id (the addresses' owner)
      // and hostIf, both recorded before anything was made.
      const withAddrs: EndpointRecord = { ...record, addresses };
      undo.push('leave', () => driver.leave({ network: specOf(net), config: net.config, endpointId: id, sandbox: sandboxNs, ifName, hostIf }));
      const joined = await driver.join({
        network: specOf(net), config: net.config, endpointId: id, sandbox: sandboxNs, ifName, hostIf, addresses, defaultRoute,
        ipv6OffByDefault: true,
        ...(mac !== undefined ? { mac } : {}),
      });
      const finish = async (): Promise<EndpointRecord> => {
        const granted = req.ports !== undefined && req.ports.length > 0 ? await grantPorts(req.ports, net, id) : [];
        const ports = granted.flatMap((p) => mappingsFor(addresses, p));
        if (ports.length > 0) {
          undo.push('unpublish', () => driver.unpublish(id));
          await driver.publish({ network: specOf(net), config: net.config, endpointId: id, mappings: ports });
        }
        const done: EndpointRecord = { ...withAddrs, status: 'ready', ...(joined.mac !== undefined ? { mac: joined.mac } : {}), ports };
        await state.endpoints.put(done);
        return done;
      };
      // Host ports are chosen, published and recorded under one lock: two runs asking for an
      // ephemeral port never pick the same one.
      const ready = (req.ports?.length ?? 0) > 0 ? await state.withLock('ports', finish) : await finish();
      undo.commit();
      log.info('endpoint joined', { endpoint: id, network: net.name, sandbox: sb.name, ifName, addresses });
      return { endpoint: ready, others: eps };
    } catch (err) {
      await undo.unwind(log);
      throw wrap(`connect ${sb.name} to ${net.name}`, err);
    }
  }

  /**
   * Concrete host ports for the requests: taken ones (other endpoints' mappings, host listeners)
   * refused, ephemeral ones picked, host addresses checked to be local.
   */
  async function grantPorts(asks: readonly PortRequest[], net: NetworkRecord, self: EndpointId | undefined): Promise<(PortRequest & { hostPort: PortMapping['hostPort'] })[]> {
    const taken: HostBinding[] = (await state.endpoints.list())
      .filter((e) => e.id !== self)
      .flatMap((e) => e.ports.map(mappingOf).map((m) => ({ proto: m.proto, ...(m.hostIp !== undefined ? { hostIp: m.hostIp } : {}), family: addrFamily(m.containerIp), hostPort: m.hostPort })));
    const [listeners, ephemeral, addrs] = await Promise.all([
      deps.hostPorts.listeners(), deps.hostPorts.ephemeralRange(), deps.netlink(deps.hostNs).listAddrs(),
    ]);
    const families = [...new Set(net.subnets.map((s) => addrFamily(s.subnet)))];
    const start = Number.parseInt(deps.randomHex(2), 16);
    return assignHostPorts(asks, { taken, listeners, localAddrs: addrs.map((a) => prefixAddr(a.prefix)), ephemeral, families }, start);
  }

  /** One mapping per address family the request covers (a host address fixes the family). */
  function mappingsFor(addresses: readonly Prefix[], p: PortRequest & { hostPort: PortMapping['hostPort'] }): PortMapping[] {
    const families: Family[] = p.hostIp !== undefined ? [addrFamily(p.hostIp)] : [...new Set(addresses.map((a) => addrFamily(a)))];
    return families.map((fam) => {
      const a = addresses.find((x) => addrFamily(x) === fam);
      if (a === undefined) throw invalid('publish', `host address ${p.hostIp ?? ''} is IPv${fam} but the container has no IPv${fam} address on this network`);
      return { proto: p.proto, ...(p.hostIp !== undefined ? { hostIp: p.hostIp } : {}), hostPort: p.hostPort, containerPort: p.containerPort, containerIp: prefixAddr(a) };
    });
  }

  /** Re-creates missing (or, forced, all) networks and published ports, one driver call per driver type. */
  async function restoreKernel(ready: readonly NetworkRecord[], force: boolean): Promise<{ networks: string[]; endpoints: string[]; sandboxOf: Map<string, string>; networkOf: Map<string, NetworkRecord> }> {
    const eps = (await state.endpoints.list()).filter((e) => e.status === 'ready' && e.ports.length > 0);
    const nets = new Map(ready.map((n) => [n.id as string, n]));
    const out = {
      networks: [] as string[], endpoints: [] as string[],
      sandboxOf: new Map(eps.map((e) => [e.id as string, e.sandboxId as string])),
      networkOf: new Map(eps.flatMap((e) => { const n = nets.get(e.networkId); return n ? [[e.id as string, n] as const] : []; })),
    };
    for (const type of new Set(ready.map((n) => n.driver))) {
      const mine = ready.filter((n) => n.driver === type);
      const byId = new Map(mine.map((n) => [n.id as string, n]));
      const ports = eps.flatMap((e) => {
        const n = byId.get(e.networkId);
        return n ? [{ network: specOf(n), config: n.config, endpointId: e.id, mappings: e.ports.map(mappingOf) }] : [];
      });
      const r = await drivers(type).restore({ networks: mine.map((n) => ({ spec: specOf(n), config: n.config })), ports, force });
      out.networks.push(...mine.filter((n) => r.networks.includes(n.id)).map((n) => n.name));
      out.endpoints.push(...r.endpoints);
    }
    // An endpoint being removed meanwhile (its teardown holds its sandbox's lock from unpublish to
    // the record's deletion) may just have had its ports put back: take them away again.
    for (const id of out.endpoints) {
      const sandboxId = out.sandboxOf.get(id);
      const net = out.networkOf.get(id);
      if (sandboxId === undefined || net === undefined) continue;
      await state.withLock(`sandbox:${sandboxId}`, async () => {
        if (!(await state.endpoints.get(id))) await drivers(net.driver).unpublish(id as EndpointId);
      });
    }
    return out;
  }

  const controller: Controller = {
    reloadFirewall: (opts = {}) =>
      state.withLock('networks', async () => {
        // In creation order: the kernel then shows the same ruleset as before the flush.
        const ready = (await state.networks.list()).filter((n) => n.status === 'ready').sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id));
        const r = await restoreKernel(ready, opts.force ?? true);
        if (r.networks.length + r.endpoints.length > 0) log.info('firewall restored', { networks: r.networks, endpoints: r.endpoints.length, force: opts.force ?? true });
        return { networks: r.networks, endpoints: r.endpoints };
      }),

    async ensurePredefined() {
      await state.withLock('networks', async () => {
        const all = await state.networks.list();
        const has = (n: string): boolean => all.some((x) => x.name === n);
        if (!has('bridge')) await createNetworkLocked({ name: 'bridge', driver: 'bridge', options: { bridge: DEFAULT_BRIDGE } }, true);
        if (!has('host')) await createNetworkLocked({ name: 'host', driver: 'host' }, true);
        if (!has('none')) await createNetworkLocked({ name: 'none', driver: 'none' }, true);
      });
    },

    async createNetwork(req) {
      const n = await state.withLock('networks', () => createNetworkLocked(req, false));
      await notify('network-created', [n]);
      return n;
    },

    deleteNetwork: async (idOrName) => {
      const gone = await state.withLock('networks', async () => {
        const n = await findNetwork(idOrName);
        if (n.predefined) throw conflict(`${n.name} is a pre-defined network and cannot be removed`, { field: 'network' });
        const eps = (await state.endpoints.list()).filter((e) => e.networkId === n.id);
        if (eps.length > 0) throw conflict(`error while removing network: network ${n.name} id ${n.id} has active endpoints (${eps.length})`, { field: 'network' });
        await removeNetworkEverywhere(n, drivers(n.driver)).catch((err: unknown) => {
          throw wrap(`remove network ${n.name}`, err);
        });
        log.info('network removed', { network: n.id, name: n.name });
        return n;
      });
      await notify('network-deleted', [gone]);
    },

    async pruneNetworks() {
      const removed = await state.withLock('networks', async () => {
        const eps = await state.endpoints.list();
        const gone: NetworkRecord[] = [];
        for (const n of await state.networks.list()) {
          if (n.predefined || eps.some((e) => e.networkId === n.id)) continue;
          await removeNetworkEverywhere(n, drivers(n.driver));
          gone.push(n);
        }
        return gone;
      });
      if (removed.length > 0) await notify('network-deleted', removed);
      return removed.map((n) => n.name).sort();
    },

    listNetworks: async () => (await state.networks.list()).sort((a, b) => a.name.localeCompare(b.name)),
    findNetwork,

    async inspectNetwork(idOrName) {
      const network = await findNetwork(idOrName);
      const sandboxes = await state.sandboxes.list();
      const endpoints = (await state.endpoints.list())
        .filter((e) => e.networkId === network.id)
        .map((e) => ({ ...e, sandboxName: sandboxes.find((s) => s.id === e.sandboxId)?.name ?? '' }));
      return { network, endpoints };
    },

    async createSandbox(req) {
      const name = checkName(req.name, 'name');
      const id = (req.id ?? newId()) as SandboxId;
      const mode = req.mode;
      if (mode.kind === 'container') {
        const forbidden = [
          ['hostname', req.hostname], ['dns', req.dns?.length ? req.dns : undefined], ['dns-search', req.dnsSearch?.length ? req.dnsSearch : undefined],
          ['dns-option', req.dnsOptions?.length ? req.dnsOptions : undefined], ['add-host', req.extraHosts?.length ? req.extraHosts : undefined],
        ] as const;
        for (const [field, v] of forbidden) if (v !== undefined) throw invalid(field, `conflicting options: ${field} and the container type network mode`);
      }
      const extraHosts = (req.extraHosts ?? []).map((h, i) => ({ ip: parseIpAddr(h.ip, `add-host[${i}]`), names: h.names.map((nm) => checkHostname(nm, `add-host[${i}]`)) }));
      const dns = (req.dns ?? []).map((d, i) => parseIpAddr(d, `dns[${i}]`));
      const hostname = checkHostname(req.hostname ?? id.slice(0, 12), 'hostname');
      const made = await state.withLock('sandboxes', async () => {
        const all = await state.sandboxes.list();
        if (all.some((s) => s.name === name)) throw conflict(`the container name "${name}" is already in use`, { field: 'name' });
        if (all.some((s) => s.id === id)) throw conflict(`container id ${id} is already in use`, { field: 'id' });
        let target: SandboxRecord | undefined;
        if (mode.kind === 'container') {
          target = await findSandbox(mode.target).catch(() => {
            throw new TsnetError('NOT_FOUND', `network container:${mode.target}: no such container: ${mode.target}`, { details: { field: 'network' } });
          });
        }
        let network: NetworkRecord | undefined;
        if (mode.kind === 'network') network = await findNetwork(mode.network);
        const dir = deps.files.dirFor(id);
        const netnsName = `tsnet-${id.slice(0, 12)}`;
        const record: SandboxRecord = {
          schemaVersion: 1, id, name, hostname, created: now(), status: 'creating',
          netns: mode.kind === 'host' ? { kind: 'host' }
            : target !== undefined ? (target.netns.kind === 'host' ? { kind: 'host' } : { kind: 'container', sandboxId: target.id, path: target.netns.path })
            : { kind: 'own', name: netnsName, path: deps.netns.pathOf(netnsName) },
          extraHosts, dns, dnsSearch: [...(req.dnsSearch ?? [])], dnsOptions: [...(req.dnsOptions ?? [])],
          hostsPath: target?.hostsPath ?? `${dir}/hosts`, resolvConfPath: target?.resolvConfPath ?? `${dir}/resolv.conf`,
        };
        const undo = new UndoStack();
        try {
          await state.sandboxes.create(record);
          undo.push('sandbox record', () => state.sandboxes.delete(id));
          if (record.netns.kind === 'own') {
            const own = record.netns;
            undo.push('netns', () => deps.netns.remove(own.name));
            // IPv6 off by default: interfaces of IPv4-only networks then need no sysctl write.
            const ns = await deps.netns.create(own.name, { sysctls: { 'net.ipv6.conf.default.disable_ipv6': 1 } });
            undo.push('netlink handle', () => deps.netlink.release(ns)); // its ip process would keep the namespace alive
            await deps.netlink(ns).setLink('lo' as IfName, { up: true });
          }
          if (record.netns.kind !== 'container') {
            undo.push('files', () => deps.files.removeDir(dir));
            // `--dns` given: exactly those servers (Docker's explicit choice); else the embedded
            // resolver on the network's gateway when it serves the network.
            const embedded = network !== undefined && dns.length === 0 ? resolverAddress(network) : undefined;
            await deps.files.write(record.resolvConfPath, await deps.resolvConf({
              dns, dnsSearch: record.dnsSearch, dnsOptions: record.dnsOptions, ...(embedded !== undefined ? { embedded } : {}),
            }));
            await writeFiles(record);
          }
          const ready: SandboxRecord = { ...record, status: 'ready' };
          await state.sandboxes.put(ready);
          undo.commit();
          return { ready, network };
        } catch (err) {
          await undo.unwind(log);
          throw wrap(`create sandbox ${name}`, err);
        }
      });
      // Outside the sandboxes lock (other sandboxes may be created meanwhile); connect takes this
      // sandbox's own lock.
      if (made.network) {
        await controller.connect(id, made.network.id, req.connect ?? {}).catch(async (err: unknown) => {
          await controller.deleteSandbox(id).catch((e: unknown) => log.warn('rollback of sandbox failed', { sandbox: id, err: e }));
          throw err;
        });
      }
      return { record: made.ready, netns: netnsOf(made.ready) };
    },

    findSandbox,
    listSandboxes: async () => state.sandboxes.list(),
    endpointsOf,

    async connect(sandbox, network, req = {}) {
      const sb = await findSandbox(sandbox);
      const net = await findNetwork(network);
      const endpoint = await state.withLock(`sandbox:${sb.id}`, async () => {
        const made = await connectLocked(sb, net, req);
        await writeFiles(sb, [...made.others, made.endpoint]);
        return made.endpoint;
      });
      await notify('connected', [net]);
      return endpoint;
    },

    async disconnect(sandbox, network) {
      const sb = await findSandbox(sandbox);
      const net = await findNetwork(network);
      await state.withLock(`sandbox:${sb.id}`, async () => {
        const ep = (await endpointsOf(sb.id)).find((e) => e.networkId === net.id);
        if (!ep) throw new TsnetError('NOT_FOUND', `container ${sb.name} is not connected to network ${net.name}`, { details: { field: 'network' } });
        await teardownEndpoint(ep, netnsOf(sb)).catch((err: unknown) => {
          throw wrap(`disconnect ${sb.name} from ${net.name}`, err);
        });
        await writeFiles(sb);
        log.info('endpoint left', { endpoint: ep.id, network: net.name, sandbox: sb.name });
      });
      await notify('disconnected', [net]);
    },

    async deleteSandbox(idOrName) {
      const sb = await findSandbox(idOrName);
      const left = await state.withLock(`sandbox:${sb.id}`, async () => {
        const ns = netnsOf(sb);
        const eps = await endpointsOf(sb.id);
        await teardownAll([
          ...eps.map((ep) => ({ label: `endpoint ${ep.ifName}`, run: () => teardownEndpoint(ep, ns) })),
          ...(sb.netns.kind === 'own'
            ? [{ label: 'netlink handle', run: () => deps.netlink.release(ns) }, { label: 'netns', run: () => deps.netns.remove((sb.netns as { name: string }).name) }]
            : []),
          ...(sb.netns.kind !== 'container' ? [{ label: 'files', run: () => deps.files.removeDir(deps.files.dirFor(sb.id)) }] : []),
          { label: 'record', run: () => state.sandboxes.delete(sb.id) },
        ]).catch((err: unknown) => {
          throw wrap(`remove sandbox ${sb.name}`, err);
        });
        return eps;
      });
      if (left.length > 0) {
        const nets = (await state.networks.list()).filter((n) => left.some((e) => e.networkId === n.id));
        await notify('sandbox-deleted', nets);
      }
    },

    async reconcile() {
      const cleaned: string[] = [];
      const restored: string[] = [];
      // Each half-made object is re-read under the lock its creator holds for the whole creation,
      // so an operation still in progress in another process is never mistaken for a crashed one.
      await state.withLock('sandboxes', async () => {
        for (const sb of (await state.sandboxes.list()).filter((s) => s.status === 'creating')) {
          await controller.deleteSandbox(sb.id);
          cleaned.push(`sandbox ${sb.name}`);
        }
      });
      const sandboxIds = new Set((await state.sandboxes.list()).map((s) => s.id as string));
      const suspects = (await state.endpoints.list()).filter((e) => e.status === 'creating' || !sandboxIds.has(e.sandboxId));
      for (const ep of suspects) {
        await state.withLock(`sandbox:${ep.sandboxId}`, async () => {
          const cur = await state.endpoints.get(ep.id);
          if (!cur) return;
          const sb = await state.sandboxes.get(cur.sandboxId);
          if (cur.status === 'creating' || !sb) {
            await teardownEndpoint(cur, sb ? netnsOf(sb) : deps.hostNs);
            cleaned.push(`endpoint ${cur.id.slice(0, 12)}`);
          }
        });
      }
      await state.withLock('networks', async () => {
        const ready: NetworkRecord[] = [];
        for (const n of await state.networks.list()) {
          if (n.status === 'creating') {
            await removeNetworkEverywhere(n, drivers(n.driver));
            cleaned.push(`network ${n.name}`);
          } else ready.push(n);
        }
        const r = await restoreKernel(ready, false);
        restored.push(...r.networks, ...r.endpoints.map((e) => `ports of ${e.slice(0, 12)}`));
        // Addresses are reserved only after their endpoint's record exists, so: list the
        // reservations first, then the records; a reservation whose owner has no record in the
        // later listing is a crash leftover (or its endpoint is gone), never one in progress.
        const held = [];
        for (const n of ready.filter((x) => drivers(x.driver).hasDataPath)) held.push(...(await ipam.listAddresses(n.id)));
        const owners = new Set((await state.endpoints.list()).map((e) => e.id as string));
        for (const a of held) {
          if (owners.has(a.owner)) continue;
          if (await ipam.releaseAddress({ networkId: a.networkId, addr: a.ip, owner: a.owner })) cleaned.push(`address ${a.ip}`);
        }
      });
      if (cleaned.length > 0) log.info('reconciled', { cleaned });
      return { cleaned, restored };
    },
  };
  return controller;
}

const HOSTNAME = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,62})(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,62}))*$/;
function checkHostname(raw: string, field: string): string {
  if (typeof raw !== 'string' || raw.length > 253 || !HOSTNAME.test(raw)) throw invalid(field, `invalid hostname ${JSON.stringify(raw)}`);
  return raw;
}


