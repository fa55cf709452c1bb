/**
 * Networks: create (validate → allocate pools → record "creating" → driver → "ready"), delete,
 * prune, the predefined ones, inspect. Each mutation runs under the `networks` lock; creation writes
 * its record before the kernel is touched, so reconcile can finish or undo what a crash interrupted.
 */
import { TsnetError, isCode, wrap } from '../core/errors.js';
import { addrFamily, parseIpAddr, parseSubnet, prefixContains, type Family, type NetworkId } from '../core/net.js';
import { teardownAll } from '../core/teardown.js';
import { UndoStack } from '../core/undo.js';
import type { DriverConfig, NetworkDriver, NetworkSpec, Peer } from '../drivers/api.js';
import type { PoolRecord } from '../ipam/api.js';
import type { ClusterNetworkSpec, ControllerDeps, CreateDoorNetworkRequest, CreateNetworkRequest, NetworkDetails } from './deps.js';
import { conflict, findNetwork, invalid, newId, notify, nowText, specOf } from './lookup.js';
import { checkName, DOOR_SANDBOX, type NetworkRecord } from './model.js';
import { purgeNetwork } from './unreadable.js';

export const DEFAULT_BRIDGE = 'tsnet0';
const PREDEFINED = ['bridge', 'host', 'none'] as const;

/** Runs the driver's setup and keeps what it had to adopt in the record's config. */
async function driverCreate(deps: ControllerDeps, driver: NetworkDriver, rec: NetworkRecord): Promise<NetworkRecord> {
  const changed: DriverConfig | undefined = await driver.createNetwork(specOf(deps, rec), rec.config);
  return changed === undefined ? rec : { ...rec, config: { ...changed } };
}

/** The cluster of `deps`, or INVALID_CONFIG naming the option that joins one. */
function clusterOf(deps: ControllerDeps, what: string): NonNullable<ControllerDeps['cluster']> {
  if (deps.cluster === undefined) throw invalid('driver', `${what}: this host is in no cluster (give --cluster-store etcd://IP:PORT and --cluster-advertise IP)`);
  return deps.cluster;
}

/** Creates a cluster network: allocated in the cluster store first, then this host's copy and kernel objects. */
async function createClusterNetworkLocked(deps: ControllerDeps, req: CreateNetworkRequest, driver: NetworkDriver, name: string): Promise<NetworkRecord> {
  const cluster = clusterOf(deps, `driver ${driver.type}`);
  if (req.ipv6 === true || (req.subnets ?? []).some((s) => s.subnet?.includes(':') === true)) throw invalid('ipv6', `${driver.type} networks are IPv4 only`);
  if ((await deps.state.networks.list()).some((n) => n.name === name)) throw conflict(`network with name ${name} already exists`, { field: 'name' });
  const id = newId(deps) as NetworkId;
  // The driver's options are checked before the store is touched (the VNI comes from the cluster).
  driver.validateNetwork(specOf(deps, { id, name, subnets: [], internal: req.internal === true, options: { vni: '1', ...(req.options ?? {}) } }));
  const c = await cluster.createNetwork({
    id, name, driver: driver.type, subnets: req.subnets ?? [], internal: req.internal === true, options: { ...(req.options ?? {}) },
    labels: { ...(req.labels ?? {}) }, dnsEnabled: req.dnsEnabled !== false,
  });
  try {
    return await adoptLocked(deps, c);
  } catch (err) {
    await cluster.deleteNetwork(c.id, c.name).catch((e: unknown) => deps.log.warn('rollback of the cluster network failed', { network: c.id, err: e }));
    throw err;
  }
}

/** This host's copy of a cluster network and its kernel objects; the caller holds `networks`. */
async function adoptLocked(deps: ControllerDeps, c: ClusterNetworkSpec): Promise<NetworkRecord> {
  const have = await deps.state.networks.get(c.id);
  if (have?.status === 'ready') return have;
  if ((await deps.state.networks.list()).some((n) => n.name === c.name && n.id !== c.id)) {
    throw conflict(`network ${c.name}: a local network of that name exists on this host; the cluster network ${c.id.slice(0, 12)} is not joined here`, { field: 'name' });
  }
  const driver = deps.drivers(c.driver);
  const config = driver.validateNetwork(specOf(deps, { ...c, subnets: c.subnets.map((x) => ({ subnet: x.subnet, gateway: x.gateway })) }));
  const record: NetworkRecord = {
    schemaVersion: 1, id: c.id, name: c.name, driver: driver.type, created: c.created, status: 'creating', internal: c.internal, ipv6: false,
    predefined: false, subnets: c.subnets.map((s) => ({ subnet: s.subnet, gateway: s.gateway, ...(s.ipRange !== undefined ? { ipRange: s.ipRange } : {}) })),
    options: { ...c.options }, labels: { ...c.labels }, config: { ...config }, ...(c.dnsEnabled ? {} : { dnsEnabled: false }), scope: 'cluster',
  };
  const undo = new UndoStack();
  try {
    await deps.state.networks.put(record);
    undo.push('delete network record', () => deps.state.networks.delete(c.id));
    const made = await driverCreate(deps, driver, record);
    const ready: NetworkRecord = { ...made, status: 'ready' };
    await deps.state.networks.put(ready);
    undo.commit();
    deps.log.info('cluster network joined', { network: c.id, name: c.name, subnets: ready.subnets.map((s) => s.subnet) });
    return ready;
  } catch (err) {
    await undo.unwind(deps.log);
    throw wrap(`join cluster network ${c.name}`, err);
  }
}

/** This host's copy of a cluster network (the agent, or a command naming a network made on another host). */
export async function adoptClusterNetwork(deps: ControllerDeps, c: ClusterNetworkSpec): Promise<NetworkRecord> {
  let made = false;
  const n = await deps.state.withLock('networks', async () => {
    made = (await deps.state.networks.get(c.id))?.status !== 'ready';
    return adoptLocked(deps, c);
  });
  if (made) await notify(deps, 'network-created', [n]);
  return n;
}

/**
 * Removes this host's copy of a cluster network that left the cluster (its record is gone from the
 * store), unless local endpoints still use it; true if it was removed.
 */
export async function dropClusterNetwork(deps: ControllerDeps, id: string): Promise<boolean> {
  const gone = await deps.state.withLock('networks', async () => {
    const n = await deps.state.networks.get(id);
    if (n === undefined || n.scope !== 'cluster') return undefined;
    if ((await deps.state.endpoints.list()).some((e) => e.networkId === n.id)) return undefined;
    await removeNetworkEverywhere(deps, n);
    deps.log.info('cluster network left', { network: n.id, name: n.name });
    return n;
  });
  if (gone) await notify(deps, 'network-deleted', [gone]);
  return gone !== undefined;
}

/** Makes the kernel's entries for the other hosts' endpoints of a cluster network exactly `peers`. */
export async function syncClusterPeers(deps: ControllerDeps, id: string, peers: readonly Peer[]): Promise<{ readonly added: number; readonly removed: number }> {
  const n = await deps.state.networks.get(id);
  if (n === undefined || n.status !== 'ready') return { added: 0, removed: 0 };
  const driver = deps.drivers(n.driver);
  if (driver.syncPeers === undefined) return { added: 0, removed: 0 };
  return driver.syncPeers(specOf(deps, n), n.config, peers);
}

/** A network by name or id, this host's own or, in a cluster, one of the cluster's (copied here at once). */
export async function findOrAdoptNetwork(deps: ControllerDeps, idOrName: string): Promise<NetworkRecord> {
  try {
    return await findNetwork(deps, idOrName);
  } catch (err) {
    if (deps.cluster === undefined || !isCode(err, 'NOT_FOUND')) throw err;
    const c = await deps.cluster.findNetwork(idOrName);
    if (c === undefined) throw err;
    return adoptClusterNetwork(deps, c);
  }
}

/** Creates a network; the caller holds the `networks` lock. */
export async function createNetworkLocked(deps: ControllerDeps, req: CreateNetworkRequest, predefined: boolean): Promise<NetworkRecord> {
  const { state, ipam, log } = deps;
  const name = checkName(req.name, 'name');
  const driver = deps.drivers(req.driver ?? 'bridge');
  if (driver.scope === 'cluster') return createClusterNetworkLocked(deps, req, driver, name);
  if (!predefined && (PREDEFINED as readonly string[]).includes(name)) throw conflict(`network name ${name}: ${name} is a pre-defined network name`, { field: 'name' });
  if (!predefined && !driver.hasDataPath) throw invalid('driver', `only one instance of "${driver.type}" network is allowed`);
  const existing = await state.networks.list();
  if (existing.some((n) => n.name === name)) throw conflict(`network with name ${name} already exists`, { field: 'name' });
  const id = newId(deps) as NetworkId;
  const subnetReqs = driver.hasDataPath ? [...(req.subnets ?? [])] : [];
  if (!driver.hasDataPath && (req.subnets?.length ?? 0) > 0) throw invalid('subnet', `the ${driver.type} driver has no subnets`);
  // Validate every subnet request's shape before allocating anything.
  const families: Family[] = subnetReqs.map((s, i) => {
    if (s.subnet === undefined) throw invalid(`subnet[${i}]`, 'gateway/ip-range/aux-address need a subnet');
    return s.subnet.includes(':') ? 6 : 4;
  });
  const ipv6 = req.ipv6 === true || families.includes(6);
  const options = { ...(req.options ?? {}) };
  const provisional: NetworkSpec = specOf(deps, { id, name, subnets: [], internal: req.internal === true, options });
  const config: DriverConfig = driver.validateNetwork(provisional);
  const record: NetworkRecord = {
    schemaVersion: 1, id, name, driver: driver.type, created: nowText(deps), status: 'creating', internal: req.internal === true, ipv6,
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
    // The driver undoes its own steps when it fails; only a success is undone from here.
    const made = await driverCreate(deps, driver, withSubnets);
    undo.push('driver delete network', () => driver.deleteNetwork(specOf(deps, made), made.config));
    const ready: NetworkRecord = { ...made, status: 'ready' };
    await state.networks.put(ready);
    undo.commit();
    log.info('network created', { network: id, name, driver: driver.type, subnets: ready.subnets.map((s) => s.subnet) });
    return ready;
  } catch (err) {
    await undo.unwind(log);
    throw wrap(`create network ${name}`, err);
  }
}

export async function createNetwork(deps: ControllerDeps, req: CreateNetworkRequest): Promise<NetworkRecord> {
  const n = await deps.state.withLock('networks', () => createNetworkLocked(deps, req, false));
  await notify(deps, 'network-created', [n]);
  return n;
}

/**
 * A door's network (Docker's CreateNetwork): its id, subnets its IPAM assigned, no tsnet pool.
 * Idempotent for the same id (dockerd replays CreateNetwork after a plugin restart).
 */
export async function createDoorNetwork(deps: ControllerDeps, req: CreateDoorNetworkRequest): Promise<NetworkRecord> {
  return deps.state.withLock('networks', async () => {
    const id = req.id as NetworkId;
    const have = await deps.state.networks.get(id);
    if (have?.status === 'ready') return have;
    const driver = deps.drivers(req.driver);
    if (!driver.hasDataPath) throw invalid('driver', `a ${req.door} network needs a driver with a data path, not ${driver.type}`);
    const subnets = req.subnets.map((s, i) => {
      const subnet = parseSubnet(s.subnet, `subnets[${i}].subnet`);
      const gateway = parseIpAddr(s.gateway, `subnets[${i}].gateway`);
      if (!prefixContains(subnet, gateway)) throw invalid(`subnets[${i}].gateway`, `${gateway} is outside ${subnet}`);
      return { subnet, gateway };
    });
    const base = { id, name: req.name, subnets, internal: req.internal, options: { ...req.options } };
    const config = driver.validateNetwork(specOf(deps, base));
    const record: NetworkRecord = {
      schemaVersion: 1, id, name: checkName(req.name, 'name'), driver: driver.type, created: nowText(deps), status: 'creating', internal: req.internal,
      ipv6: subnets.some((s) => addrFamily(s.subnet) === 6), predefined: false, subnets, options: { ...req.options }, labels: {}, config: { ...config },
      dnsEnabled: false, door: req.door, externalIpam: true,
    };
    const undo = new UndoStack();
    try {
      if (have === undefined) await deps.state.networks.create(record);
      else await deps.state.networks.put(record);
      undo.push('delete network record', () => deps.state.networks.delete(id));
      const made = await driverCreate(deps, driver, record);
      const ready: NetworkRecord = { ...made, status: 'ready' };
      await deps.state.networks.put(ready);
      undo.commit();
      deps.log.info('network created', { network: id, name: req.name, door: req.door, subnets: subnets.map((s) => s.subnet) });
      return ready;
    } catch (err) {
      await undo.unwind(deps.log);
      throw wrap(`create network ${req.name}`, err);
    }
  });
}

/** The driver's kernel objects, the pools (unless a door's IPAM owns the subnets) and the record. */
export async function removeNetworkEverywhere(deps: ControllerDeps, n: NetworkRecord): Promise<void> {
  const driver = deps.drivers(n.driver);
  await teardownAll([
    { label: 'driver', run: () => driver.deleteNetwork(specOf(deps, n), n.config) },
    { label: 'ipam', run: () => (driver.hasDataPath && n.externalIpam !== true && n.scope !== 'cluster' ? deps.ipam.releasePool(n.id) : Promise.resolve()) },
    { label: 'record', run: () => deps.state.networks.delete(n.id) },
  ]);
}

export async function deleteNetwork(deps: ControllerDeps, idOrName: string): Promise<void> {
  // A cluster network other hosts made is adopted first (its record here), then removed as any.
  const known = await (deps.cluster !== undefined ? findOrAdoptNetwork(deps, idOrName) : findNetwork(deps, idOrName)).catch(async (err: unknown) => {
    // A network whose record could not be read is removed by its id, through its owner tags.
    if (isCode(err, 'NOT_FOUND') && (await purgeNetwork(deps, idOrName)) !== undefined) return undefined;
    throw err;
  });
  if (known === undefined) return;
  const gone = await deps.state.withLock('networks', async () => {
    const n = await findNetwork(deps, idOrName);
    if (n.predefined) throw conflict(`${n.name} is a pre-defined network and cannot be removed`, { field: 'network' });
    if (n.door !== undefined) throw conflict(`network ${n.name} belongs to ${n.door}: remove it there (${n.door} network rm)`, { field: 'network' });
    const eps = (await deps.state.endpoints.list()).filter((e) => e.networkId === n.id);
    if (eps.length > 0) throw conflict(`error while removing network: network ${n.name} id ${n.id} has active endpoints (${eps.length})`, { field: 'network' });
    // A cluster network goes from the store first (refused while another host has endpoints on it);
    // the other hosts' agents then remove their copies.
    if (n.scope === 'cluster') await clusterOf(deps, `network ${n.name}`).deleteNetwork(n.id, n.name);
    await removeNetworkEverywhere(deps, n).catch((err: unknown) => {
      throw wrap(`remove network ${n.name}`, err);
    });
    deps.log.info('network removed', { network: n.id, name: n.name });
    return n;
  });
  await notify(deps, 'network-deleted', [gone]);
}

/** A door's network (Docker's DeleteNetwork); succeeds if it is gone. */
export async function deleteDoorNetwork(deps: ControllerDeps, id: string): Promise<void> {
  const gone = await deps.state.withLock('networks', async () => {
    const n = await deps.state.networks.get(id);
    if (n === undefined) return undefined;
    const eps = (await deps.state.endpoints.list()).filter((e) => e.networkId === n.id && e.sandboxId !== DOOR_SANDBOX);
    if (eps.length > 0) throw conflict(`network ${n.name} has ${eps.length} tsnet endpoint(s)`, { field: 'network' });
    await removeNetworkEverywhere(deps, n);
    return n;
  });
  if (gone) await notify(deps, 'network-deleted', [gone]);
}

/** Removes every network without endpoints that is not predefined (nor a door's); returns their names. */
export async function pruneNetworks(deps: ControllerDeps): Promise<string[]> {
  const removed = await deps.state.withLock('networks', async () => {
    const eps = await deps.state.endpoints.list();
    const gone: NetworkRecord[] = [];
    for (const n of await deps.state.networks.list()) {
      if (n.predefined || n.door !== undefined || n.scope === 'cluster' || eps.some((e) => e.networkId === n.id)) continue;
      await removeNetworkEverywhere(deps, n);
      gone.push(n);
    }
    return gone;
  });
  if (removed.length > 0) await notify(deps, 'network-deleted', removed);
  return removed.map((n) => n.name).sort();
}

/**
 * The predefined networks (bridge on tsnet0, host, none). A `tsnet0` that another store on this
 * host owns is left alone: this store's default bridge is then `tsnet-<engine id>`.
 */
export async function ensurePredefined(deps: ControllerDeps): Promise<void> {
  // Every command asks; only the first one of a state directory needs the lock.
  const names = new Set((await deps.state.networks.list()).map((n) => n.name));
  if (PREDEFINED.every((n) => names.has(n))) return;
  const made = await deps.state.withLock('networks', async () => {
    const all = await deps.state.networks.list();
    const has = (n: string): boolean => all.some((x) => x.name === n);
    const out: NetworkRecord[] = [];
    if (!has('bridge')) {
      try {
        out.push(await createNetworkLocked(deps, { name: 'bridge', driver: 'bridge', options: { bridge: DEFAULT_BRIDGE } }, true));
      } catch (err) {
        if (!(isCode(err, 'ALREADY_EXISTS') && (err as TsnetError).details['reason'] === 'owned')) throw err;
        const alt = `tsnet-${deps.owner.scope.slice(0, 8)}`;
        deps.log.warn(`${DEFAULT_BRIDGE} belongs to another tsnet store; this store's default bridge is ${alt}`, { error: (err as Error).message });
        out.push(await createNetworkLocked(deps, { name: 'bridge', driver: 'bridge', options: { bridge: alt } }, true));
      }
    }
    if (!has('host')) out.push(await createNetworkLocked(deps, { name: 'host', driver: 'host' }, true));
    if (!has('none')) out.push(await createNetworkLocked(deps, { name: 'none', driver: 'none' }, true));
    return out;
  });
  // The daemon's DNS learns the default bridge here: a daemon already running (started by the
  // first `run` before any network existed) would otherwise not listen on its gateway.
  if (made.length > 0) await notify(deps, 'network-created', made);
}

export async function listNetworks(deps: ControllerDeps): Promise<NetworkRecord[]> {
  return (await deps.state.networks.list()).sort((a, b) => a.name.localeCompare(b.name));
}

export async function inspectNetwork(deps: ControllerDeps, idOrName: string): Promise<NetworkDetails> {
  const network = deps.cluster !== undefined ? await findOrAdoptNetwork(deps, idOrName) : await findNetwork(deps, idOrName);
  const sandboxes = await deps.state.sandboxes.list();
  const endpoints = (await deps.state.endpoints.list())
    .filter((e) => e.networkId === network.id)
    .map((e) => ({ ...e, sandboxName: sandboxes.find((s) => s.id === e.sandboxId)?.name ?? '' }));
  if (network.scope !== 'cluster' || deps.cluster === undefined) return { network, endpoints };
  return { network, endpoints, remote: await deps.cluster.remoteEndpoints(network.id) };
}

export { PREDEFINED };
export type { TsnetError };
