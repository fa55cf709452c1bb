/**
 * Endpoints: connect a sandbox to a network (record "creating" → addresses → driver join → ports →
 * "ready"), disconnect, tear down; and the endpoints of doors that own their sandboxes (Docker's
 * CreateEndpoint/Join/ProgramExternalConnectivity/DeleteEndpoint), which go through the same
 * records, the same IPAM, the same driver and the same port picker.
 *
 * Locks (locks.ts): `sandbox:<id>` for a sandbox's endpoints, `endpoint:<id>` for a door endpoint,
 * `ports` inside either while host ports are chosen, published and recorded.
 */
import { TsnetError, isCode, wrap } from '../core/errors.js';
import { addrFamily, parseEndpointId, parseIfName, parseIpAddr, parseMac, parsePrefix, prefixAddr, type EndpointId, type IfName, type NetnsRef, type Prefix } from '../core/net.js';
import { teardownAll } from '../core/teardown.js';
import { UndoStack } from '../core/undo.js';
import type { PublishRequest } from '../drivers/api.js';
import type { ConnectRequest, ControllerDeps, CreateDoorEndpointRequest, PortRequest } from './deps.js';
import { conflict, endpointPrefix, endpointsOf, findNetwork, findSandbox, invalid, mappingOf, netnsOf, notify, nowText, specOf } from './lookup.js';
import { checkName, DOOR_SANDBOX, type EndpointRecord, type NetworkRecord, type SandboxRecord } from './model.js';
import { findOrAdoptNetwork } from './networks.js';
import { grantPorts, mappingsFor, type GrantedPort } from './publish.js';

/** What the endpoint's record says was published (the driver removes exactly that). */
const publishedOf = (deps: ControllerDeps, net: NetworkRecord, ep: EndpointRecord): PublishRequest => ({
  network: specOf(deps, net), config: net.config, endpointId: ep.id, mappings: ep.ports.map(mappingOf),
});

/** Undoes an endpoint in the kernel, the IPAM and the records; every step runs (teardownAll). */
export async function teardownEndpoint(deps: ControllerDeps, ep: EndpointRecord, sandboxNs: NetnsRef): Promise<void> {
  const net = await deps.state.networks.get(ep.networkId);
  const steps = [];
  if (net) {
    const driver = deps.drivers(net.driver);
    steps.push(
      { label: `unpublish ${ep.id}`, run: () => (ep.ports.length > 0 ? driver.unpublish(ep.id, publishedOf(deps, net, ep)) : Promise.resolve()) },
      {
        label: `leave ${ep.id}`,
        run: () => driver.leave({ network: specOf(deps, net), config: net.config, endpointId: ep.id, sandbox: sandboxNs, ifName: ep.ifName, ...(ep.hostIf !== undefined ? { hostIf: ep.hostIf } : {}) }),
      },
    );
  }
  steps.push(
    // iproute2 caches interface names per process: after the pair is gone, a fresh ip process
    // for the sandbox, so that a later eth<N> of the same name is resolved anew.
    { label: `netlink handle of ${ep.id}`, run: () => (sandboxNs.kind === 'path' ? deps.netlink.release(sandboxNs) : Promise.resolve()) },
    {
      label: `release addresses of ${ep.id}`,
      run: async () => {
        if (net?.scope === 'cluster') {
          // Withdrawn from the store first: other hosts drop its entries and names; then the address.
          if (deps.cluster !== undefined) {
            await deps.cluster.withdrawEndpoint(net, ep);
            await deps.cluster.releaseOwner(net, ep.id);
          }
          return;
        }
        if (net?.externalIpam !== true) await releaseAddresses(deps, ep);
      },
    },
    { label: `endpoint record ${ep.id}`, run: () => deps.state.endpoints.delete(ep.id) },
  );
  await teardownAll(steps);
}

/**
 * Frees an endpoint's addresses. A ready endpoint recorded every address it holds: each is released
 * by one owner-checked lookup, whatever the size of the pool. One still "creating" (a crash) may hold
 * addresses it never recorded: its owner's reservations are searched for.
 */
async function releaseAddresses(deps: ControllerDeps, ep: EndpointRecord): Promise<void> {
  if (ep.status !== 'ready') {
    await deps.ipam.releaseOwner(ep.id, { networkId: ep.networkId });
    return;
  }
  for (const a of ep.addresses) await deps.ipam.releaseAddress({ networkId: ep.networkId, addr: prefixAddr(a), owner: ep.id });
}

/**
 * Frees the addresses of `networks` whose owner has no endpoint record (a crash between reserving
 * and recording them, or an endpoint gone); returns them. Addresses are reserved only after their
 * endpoint's record exists, so: the reservations are listed first, then the records; a reservation
 * whose owner has no record in the later listing is a leftover, never one in progress.
 */
export async function releaseLeftoverAddresses(deps: ControllerDeps, networks: readonly NetworkRecord[]): Promise<string[]> {
  const held = [];
  for (const n of networks) held.push(...(await deps.ipam.listAddresses(n.id)));
  if (held.length === 0) return [];
  const owners = new Set((await deps.state.endpoints.list()).map((e) => e.id as string));
  const freed: string[] = [];
  for (const a of held) {
    if (owners.has(a.owner)) continue;
    if (await deps.ipam.releaseAddress({ networkId: a.networkId, addr: a.ip, owner: a.owner })) freed.push(a.ip);
  }
  return freed;
}

/** Checks a connect request fully before anything is allocated. */
function validateConnect(net: NetworkRecord, req: ConnectRequest): { ip4?: ReturnType<typeof parseIpAddr>; ip6?: ReturnType<typeof parseIpAddr>; mac?: ReturnType<typeof parseMac>; ifName?: IfName } {
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
  const ifName = req.ifName !== undefined ? parseIfName(req.ifName, 'ifName') : undefined;
  return { ...(ip4 !== undefined ? { ip4 } : {}), ...(ip6 !== undefined ? { ip6 } : {}), ...(mac !== undefined ? { mac } : {}), ...(ifName !== undefined ? { ifName } : {}) };
}

/**
 * Publishes the ports of an endpoint, under the `ports` lock: `asks` are granted now, or were
 * granted already under this same lock (`GrantedPort[]`, the host's facts read once).
 */
async function publishLocked(deps: ControllerDeps, net: NetworkRecord, id: EndpointId, addresses: readonly Prefix[], asks: readonly PortRequest[] | { readonly granted: readonly GrantedPort[] }, undo: UndoStack): Promise<EndpointRecord['ports']> {
  const driver = deps.drivers(net.driver);
  const granted = 'granted' in asks ? asks.granted : asks.length > 0 ? await grantPorts(deps, asks, net, id) : [];
  const ports = granted.flatMap((p) => mappingsFor(addresses, p));
  if (ports.length > 0) {
    undo.push('unpublish', () => driver.unpublish(id));
    await driver.publish({ network: specOf(deps, net), config: net.config, endpointId: id, mappings: ports });
  }
  return ports;
}

/**
 * Connects a sandbox to a network; the caller holds `sandbox:<id>`. With ports, the whole join holds
 * `ports` too: the host's facts (listeners, addresses, other endpoints' ports) are read once, a taken
 * or busy port is refused before anything changes, and two runs never pick the same ephemeral port.
 */
async function connectLocked(deps: ControllerDeps, sb: SandboxRecord, netRef: NetworkRecord, req: ConnectRequest): Promise<{ endpoint: EndpointRecord; others: EndpointRecord[] }> {
  if ((req.ports?.length ?? 0) === 0) return connectWith(deps, sb, netRef, req, undefined);
  return deps.state.withLock('ports', async () => {
    const net = (await deps.state.networks.get(netRef.id)) ?? netRef;
    validateConnect(net, req);
    return connectWith(deps, sb, net, req, await grantPorts(deps, req.ports ?? [], net, undefined));
  });
}

async function connectWith(deps: ControllerDeps, sb: SandboxRecord, netRef: NetworkRecord, req: ConnectRequest, granted: readonly GrantedPort[] | undefined): Promise<{ endpoint: EndpointRecord; others: EndpointRecord[] }> {
  const { state, ipam, log } = deps;
  if (sb.netns.kind !== 'own' && sb.netns.kind !== 'external') {
    throw invalid('network', sb.netns.kind === 'host' ? 'container cannot be disconnected from host network or connected to host network' : 'conflicting options: container type network can\'t be used with multiple networks');
  }
  // Re-read under the lock: a network being removed meanwhile is not joined.
  const net = await state.networks.get(netRef.id);
  if (net === undefined) throw new TsnetError('NOT_FOUND', `network ${netRef.name} not found`, { details: { field: 'network' } });
  const driver = deps.drivers(net.driver);
  if (!driver.hasDataPath) throw invalid('network', `container cannot be connected to the ${net.driver} network`);
  if (net.status !== 'ready') throw new TsnetError('UNAVAILABLE', `network ${net.name} is being created or removed`);
  if (net.door !== undefined) throw invalid('network', `network ${net.name} belongs to ${net.door}: connect ${net.door} containers to it`);
  const eps = await endpointsOf(deps, sb.id);
  if (eps.some((e) => e.networkId === net.id)) throw conflict(`endpoint with name ${sb.name} already exists in network ${net.name}`, { field: 'network' });
  const v = validateConnect(net, req);
  const used = new Set<string>(eps.map((e) => e.ifName));
  let n = 0;
  while (used.has(`eth${n}`)) n++;
  const ifName = v.ifName ?? (`eth${n}` as IfName);
  if (used.has(ifName)) throw conflict(`interface ${ifName} of container ${sb.name} is already in use`, { field: 'ifName' });
  const id = `${endpointPrefix(sb.id)}${deps.randomHex(24)}` as EndpointId;
  const hostIf = `veth${deps.randomHex(4).slice(0, 7)}` as IfName;
  const defaultRoute = !net.internal && !eps.some((e) => e.defaultRoute);
  const record: EndpointRecord = {
    schemaVersion: 1, id, networkId: net.id, sandboxId: sb.id, created: nowText(deps), status: 'creating', ifName, hostIf,
    ...(v.mac !== undefined ? { mac: v.mac } : {}), addresses: [], aliases: [...(req.aliases ?? [])], defaultRoute, ports: [],
  };
  const sandboxNs = netnsOf(sb);
  const undo = new UndoStack();
  try {
    // The record first: reconcile's IPAM gc releases reservations whose owner has no record, so
    // an address is only ever reserved for an endpoint whose record already exists.
    await state.endpoints.create(record);
    undo.push('endpoint record', () => state.endpoints.delete(id));
    const cluster = net.scope === 'cluster' ? deps.cluster : undefined;
    if (net.scope === 'cluster' && cluster === undefined) throw invalid('network', `network ${net.name} is a cluster network and this host is in no cluster (--cluster-store)`);
    undo.push('release addresses', () => (cluster !== undefined ? cluster.releaseOwner(net, id) : ipam.releaseOwner(id, { networkId: net.id })));
    const addresses: Prefix[] = [];
    for (const s of net.subnets) {
      const fam = addrFamily(s.subnet);
      const want = fam === 4 ? v.ip4 : v.ip6;
      if (cluster !== undefined) {
        addresses.push(await cluster.requestAddress(net, id, want));
        continue;
      }
      const ask = { networkId: net.id, owner: id, family: fam, ...(want !== undefined ? { ip: want } : {}) };
      // A full pool may hold what crashes left: those are freed (this network's only) and the
      // request tried once more, instead of a recovery pass over everything on every command.
      const a = await ipam.requestAddress(ask).catch(async (err: unknown) => {
        if (!isCode(err, 'EXHAUSTED') || (await releaseLeftoverAddresses(deps, [net])).length === 0) throw err;
        return ipam.requestAddress(ask);
      });
      addresses.push(a.address);
    }
    // No write here: until "ready", cleanup needs only the record's id (the addresses' owner)
    // and hostIf, both recorded before anything was made.
    undo.push('leave', () => driver.leave({ network: specOf(deps, net), config: net.config, endpointId: id, sandbox: sandboxNs, ifName, hostIf }));
    const joined = await driver.join({
      network: specOf(deps, net), config: net.config, endpointId: id, sandbox: sandboxNs, ifName, hostIf, addresses, defaultRoute,
      ipv6OffByDefault: true,
      ...(v.mac !== undefined ? { mac: v.mac } : {}),
    });
    const ports = granted === undefined ? [] : await publishLocked(deps, net, id, addresses, { granted }, undo);
    // A driver without a host-side interface (macvlan) leaves none to record.
    const { hostIf: _planned, ...withoutHostIf } = record;
    const base = joined.hostIf === undefined ? withoutHostIf : record;
    const ready: EndpointRecord = { ...base, addresses, status: 'ready', ...(joined.mac !== undefined ? { mac: joined.mac } : {}), ports };
    if (cluster !== undefined) {
      // One round trip: the other hosts learn the endpoint (kernel entries, names), and the store
      // refuses an address another host's endpoint holds.
      await cluster.publishEndpoint(net, ready, [sb.name, sb.hostname, ...ready.aliases, sb.id.slice(0, 12)]);
      undo.push('withdraw', () => cluster.withdrawEndpoint(net, ready));
    }
    await state.endpoints.put(ready);
    undo.commit();
    log.info('endpoint joined', { endpoint: id, network: net.name, sandbox: sb.name, ifName, addresses });
    return { endpoint: ready, others: eps };
  } catch (err) {
    await undo.unwind(log);
    throw wrap(`connect ${sb.name} to ${net.name}`, err);
  }
}

/** Rewrites the sandbox's /etc/hosts from its endpoints (a container-mode sandbox shares its target's). */
export async function writeHostsFile(deps: ControllerDeps, sb: SandboxRecord, known?: readonly EndpointRecord[]): Promise<void> {
  if (sb.netns.kind === 'container' || sb.netns.kind === 'external') return; // the target's, or the other runtime's
  const eps = known ?? (await endpointsOf(deps, sb.id));
  const self = eps.flatMap((e) => e.addresses.map((a) => ({ ip: a.split('/')[0] as ReturnType<typeof parseIpAddr>, names: [sb.hostname] })));
  await deps.files.write(sb.hostsPath, deps.hostsFile(self, sb.extraHosts));
}

export async function connect(deps: ControllerDeps, sandbox: string, network: string, req: ConnectRequest = {}): Promise<EndpointRecord> {
  const sb = await findSandbox(deps, sandbox);
  const net = await findOrAdoptNetwork(deps, network);
  const endpoint = await deps.state.withLock(`sandbox:${sb.id}`, async () => {
    const made = await connectLocked(deps, sb, net, req);
    await writeHostsFile(deps, sb, [...made.others, made.endpoint]);
    return made.endpoint;
  });
  await notify(deps, 'connected', [net], { endpoints: [endpoint.id], sandboxes: [sb.id] });
  return endpoint;
}

export async function disconnect(deps: ControllerDeps, sandbox: string, network: string): Promise<void> {
  const sb = await findSandbox(deps, sandbox);
  const net = await findNetwork(deps, network);
  const gone = await deps.state.withLock(`sandbox:${sb.id}`, async () => {
    const ep = (await endpointsOf(deps, sb.id)).find((e) => e.networkId === net.id);
    if (!ep) throw new TsnetError('NOT_FOUND', `container ${sb.name} is not connected to network ${net.name}`, { details: { field: 'network' } });
    await teardownEndpoint(deps, ep, netnsOf(sb)).catch((err: unknown) => {
      throw wrap(`disconnect ${sb.name} from ${net.name}`, err);
    });
    await writeHostsFile(deps, sb);
    deps.log.info('endpoint left', { endpoint: ep.id, network: net.name, sandbox: sb.name });
    return ep;
  });
  await notify(deps, 'disconnected', [net], { endpoints: [gone.id], sandboxes: [sb.id] });
}

// -- endpoints of doors that own their sandboxes (Docker) ---------------------------------------

/**
 * Docker's CreateEndpoint: the record, the addresses (as assigned: reserved in tsnet's IPAM when the
 * network's pools are tsnet's), the pair with its container end left in the host namespace as
 * `peerIf`. Idempotent for the same id.
 */
export async function createDoorEndpoint(deps: ControllerDeps, req: CreateDoorEndpointRequest & { readonly hostIf: IfName; readonly peerIf: IfName }): Promise<EndpointRecord> {
  const id = parseEndpointId(req.id, 'EndpointID');
  return deps.state.withLock(`endpoint:${id}`, async () => {
    const have = await deps.state.endpoints.get(id);
    if (have?.status === 'ready') return have;
    const net = await deps.state.networks.get(req.network);
    if (net === undefined) throw new TsnetError('NOT_FOUND', `network ${req.network} not found`, { details: { field: 'NetworkID', value: req.network } });
    const driver = deps.drivers(net.driver);
    if (driver.joinHostPeer === undefined) throw invalid('network', `the ${net.driver} driver cannot leave an interface in the host namespace for ${req.door}`);
    const addresses = req.addresses.map((a, i) => parsePrefix(a, `Interface.Address[${i}]`));
    const mac = req.mac !== undefined && req.mac !== '' ? parseMac(req.mac, 'Interface.MacAddress') : undefined;
    const record: EndpointRecord = {
      schemaVersion: 1, id, networkId: net.id, sandboxId: DOOR_SANDBOX, created: nowText(deps), status: 'creating', ifName: req.peerIf, hostIf: req.hostIf,
      ...(mac !== undefined ? { mac } : {}), addresses, aliases: [], defaultRoute: false, ports: [], door: req.door, peerIf: req.peerIf,
    };
    const undo = new UndoStack();
    try {
      if (have === undefined) await deps.state.endpoints.create(record);
      else await deps.state.endpoints.put(record);
      undo.push('endpoint record', () => deps.state.endpoints.delete(id));
      // The addresses are the door's IPAM's (Docker's IpamDriver calls: tsnet's or another plugin's).
      undo.push('leave', () => driver.leave({ network: specOf(deps, net), config: net.config, endpointId: id, sandbox: deps.hostNs, ifName: req.peerIf, hostIf: req.hostIf }));
      const joined = await driver.joinHostPeer({ network: specOf(deps, net), config: net.config, endpointId: id, hostIf: req.hostIf, peerIf: req.peerIf, ...(mac !== undefined ? { mac } : {}) });
      const ready: EndpointRecord = { ...record, status: 'ready', ...(joined.mac !== undefined ? { mac: joined.mac } : {}) };
      await deps.state.endpoints.put(ready);
      undo.commit();
      deps.log.info('door endpoint created', { endpoint: id, network: net.name, door: req.door, hostIf: req.hostIf });
      return ready;
    } catch (err) {
      await undo.unwind(deps.log);
      throw wrap(`create endpoint ${id.slice(0, 12)}`, err);
    }
  });
}

/** Docker's ProgramExternalConnectivity: the door endpoint's ports, through the one port picker. */
export async function publishDoorEndpoint(deps: ControllerDeps, id: string, asks: readonly PortRequest[]): Promise<EndpointRecord> {
  const eid = parseEndpointId(id, 'EndpointID');
  return deps.state.withLock(`endpoint:${eid}`, async () => {
    const ep = await deps.state.endpoints.get(eid);
    if (ep === undefined) throw new TsnetError('NOT_FOUND', `endpoint ${eid} not found`, { details: { field: 'EndpointID', value: eid } });
    const net = await deps.state.networks.get(ep.networkId);
    if (net === undefined) throw new TsnetError('NOT_FOUND', `network ${ep.networkId} not found`, { details: { field: 'NetworkID' } });
    if (asks.length > 0 && net.internal) throw invalid('publish', `network ${net.name} is internal: ports cannot be published`);
    const driver = deps.drivers(net.driver);
    // Replaced as a whole: Docker sends the endpoint's complete set each time.
    if (ep.ports.length > 0) await driver.unpublish(eid, publishedOf(deps, net, ep));
    const undo = new UndoStack();
    try {
      const done = await deps.state.withLock('ports', async () => {
        const ports = await publishLocked(deps, net, eid, ep.addresses, asks, undo);
        const next: EndpointRecord = { ...ep, ports };
        await deps.state.endpoints.put(next);
        return next;
      });
      undo.commit();
      return done;
    } catch (err) {
      await undo.unwind(deps.log);
      await deps.state.endpoints.put({ ...ep, ports: [] }).catch(() => undefined);
      throw wrap(`publish ports of ${eid.slice(0, 12)}`, err);
    }
  });
}

/** Docker's RevokeExternalConnectivity; idempotent. */
export async function unpublishDoorEndpoint(deps: ControllerDeps, id: string): Promise<void> {
  const eid = parseEndpointId(id, 'EndpointID');
  await deps.state.withLock(`endpoint:${eid}`, async () => {
    const ep = await deps.state.endpoints.get(eid);
    if (ep === undefined || ep.ports.length === 0) return;
    const net = await deps.state.networks.get(ep.networkId);
    if (net) await deps.drivers(net.driver).unpublish(eid, publishedOf(deps, net, ep));
    await deps.state.endpoints.put({ ...ep, ports: [] });
  });
}

/** Docker's DeleteEndpoint; idempotent. */
export async function deleteDoorEndpoint(deps: ControllerDeps, id: string): Promise<void> {
  const eid = parseEndpointId(id, 'EndpointID');
  await deps.state.withLock(`endpoint:${eid}`, async () => {
    const ep = await deps.state.endpoints.get(eid);
    if (ep === undefined) return;
    await teardownEndpoint(deps, ep, deps.hostNs);
  });
}

export async function getEndpoint(deps: ControllerDeps, id: string): Promise<EndpointRecord | undefined> {
  return deps.state.endpoints.get(parseEndpointId(id, 'EndpointID'));
}
