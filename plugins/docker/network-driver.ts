/**
 * Docker's remote NetworkDriver on tsnet's bridge driver. Docker owns the sandbox and the
 * addresses (its IPAM calls reach ipam-driver.ts): CreateEndpoint makes the veth pair with the
 * container end left in the host namespace under a temporary name (as Docker's own bridge driver
 * does), Join hands that name to dockerd (which moves it into the sandbox, renames it eth<N> and
 * configures addresses and the default route through the returned gateway), DeleteEndpoint
 * removes the pair. Published ports (ProgramExternalConnectivity) are DNAT mappings in the firewall,
 * no proxy.
 *
 * What the plugin must remember across its own restart and dockerd's (networks with their bridge
 * config, endpoints with their interfaces and ports) is kept in two store collections,
 * `docker-networks` and `docker-endpoints`; `restore()` re-creates missing bridges and firewall
 * rules at start.
 */
import { z } from 'zod';
import { TsnetError, wrap } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import {
  addrFamily, parseEndpointId, parseIpAddr, parseMac, parseNetworkId, parsePrefix, parseSubnet, prefixAddr, prefixContains,
  type EndpointId, type Family, type IfName, type IpAddr, type MacAddr, type NetworkId, type Port, type Prefix, type Proto,
} from '../../core/net.js';
import { teardownAll } from '../../core/teardown.js';
import { UndoStack } from '../../core/undo.js';
import type { DriverConfig, NetworkDriver, NetworkSpec, PublishRequest } from '../../drivers/api.js';
import { hostIfName, randomMac } from '../../drivers/bridge/index.js';
import type { PortMapping } from '../../sys/firewall/api.js';
import type { Store } from '../../sys/store/api.js';
import type { EndpointInterface, IpamData, JoinResponse, NetworkDriverApi, NetworkRequest } from './protocol.js';

/** Docker's option keys (libnetwork/netlabel). */
export const LABEL = {
  generic: 'com.docker.network.generic',
  internal: 'com.docker.network.internal',
  portMap: 'com.docker.network.portmap',
} as const;

const PROTO_NUMBERS: Readonly<Record<number, Proto>> = { 6: 'tcp', 17: 'udp', 132: 'sctp' };
/** Where a host port is picked when Docker asks for any (HostPort 0), like Docker's allocator. */
const EPHEMERAL = { start: 49153, end: 60999 } as const;
const EPHEMERAL_TRIES = 32;

const PortMappingSchema = z.strictObject({
  proto: z.enum(['tcp', 'udp', 'sctp']),
  hostIp: z.string().optional(),
  hostPort: z.strictObject({ start: z.number().int(), end: z.number().int() }),
  containerIp: z.string(),
  containerPort: z.strictObject({ start: z.number().int(), end: z.number().int() }),
});

export const DockerNetworkRecordSchema = z.strictObject({
  id: z.string(),
  name: z.string(),
  subnets: z.array(z.strictObject({ subnet: z.string(), gateway: z.string() })),
  internal: z.boolean(),
  options: z.record(z.string(), z.string()),
  config: z.record(z.string(), z.unknown()),
});
export type DockerNetworkRecord = z.infer<typeof DockerNetworkRecordSchema>;

export const DockerEndpointRecordSchema = z.strictObject({
  id: z.string(),
  networkId: z.string(),
  addresses: z.array(z.string()),
  mac: z.string(),
  hostIf: z.string(),
  peerIf: z.string(),
  /** Set (and persisted) before the first firewall call for its ports: teardown skips the firewall
   *  (an nft run) for the many endpoints that never published anything. */
  published: z.boolean(),
  ports: z.array(PortMappingSchema),
});
export type DockerEndpointRecord = z.infer<typeof DockerEndpointRecordSchema>;

/** One entry of `com.docker.network.portmap` (libnetwork types.PortBinding). */
const PortBindingSchema = z.object({
  Proto: z.number().int(),
  IP: z.string().nullish(),
  Port: z.number().int().min(1).max(65_535),
  HostIP: z.string().nullish(),
  HostPort: z.number().int().min(0).max(65_535).nullish(),
  HostPortEnd: z.number().int().min(0).max(65_535).nullish(),
});

export interface DockerNetworkDeps {
  /** The bridge driver (it must implement joinHostPeer). */
  readonly driver: NetworkDriver;
  readonly store: Store;
  readonly log: Logger;
  readonly randomHex: (bytes: number) => string;
  /** A random integer in [0, n) (ephemeral host ports). */
  readonly randomInt: (n: number) => number;
}

export interface DockerNetworkDriver extends NetworkDriverApi {
  /** Re-creates bridges and firewall rules missing in the kernel; returns the network ids restored. */
  restore(): Promise<string[]>;
}

function invalid(field: string, msg: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: ${msg}`, { details: { field } });
}

function specOf(n: DockerNetworkRecord): NetworkSpec {
  return {
    id: n.id as NetworkId,
    name: n.name,
    subnets: n.subnets.map((s) => ({ subnet: s.subnet as Prefix, gateway: s.gateway as IpAddr })),
    internal: n.internal,
    options: n.options,
  };
}

function subnetsOf(data: readonly IpamData[], field: string): { subnet: Prefix; gateway: IpAddr }[] {
  return data.map((d, i) => {
    const subnet = parseSubnet(d.Pool, `${field}[${i}].Pool`);
    if (d.Gateway === '') throw invalid(`${field}[${i}].Gateway`, 'the bridge needs a gateway address');
    const gw = d.Gateway.includes('/') ? prefixAddr(parsePrefix(d.Gateway, `${field}[${i}].Gateway`)) : parseIpAddr(d.Gateway, `${field}[${i}].Gateway`);
    if (!prefixContains(subnet, gw)) throw invalid(`${field}[${i}].Gateway`, `${gw} is outside ${subnet}`);
    return { subnet, gateway: gw };
  });
}

function genericOptions(raw: unknown): Record<string, string> {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw invalid(`Options["${LABEL.generic}"]`, 'expected an object of driver options');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v === 'string') out[k] = v;
    else if (typeof v === 'number' || typeof v === 'boolean') out[k] = String(v);
    else throw invalid(`option ${k}`, 'expected a string value');
  }
  return out;
}

export function createDockerNetworkDriver(deps: DockerNetworkDeps): DockerNetworkDriver {
  const { driver, store } = deps;
  const log = deps.log.child({ component: 'docker-driver' });
  const networks = store.collection<DockerNetworkRecord>({ name: 'docker-networks', version: 1, schema: DockerNetworkRecordSchema });
  const endpoints = store.collection<DockerEndpointRecord>({ name: 'docker-endpoints', version: 1, schema: DockerEndpointRecordSchema });
  const joinHostPeer = driver.joinHostPeer;
  if (joinHostPeer === undefined) throw new TsnetError('INTERNAL', `the ${driver.type} driver cannot leave a veth peer in the host namespace`);

  async function requireNetwork(raw: string): Promise<DockerNetworkRecord> {
    const id = parseNetworkId(raw, 'NetworkID');
    const n = await networks.get(id);
    if (!n) throw new TsnetError('NOT_FOUND', `network ${id} not found`, { details: { field: 'NetworkID', value: id } });
    return n;
  }
  async function requireEndpoint(raw: string): Promise<DockerEndpointRecord> {
    const id = parseEndpointId(raw, 'EndpointID');
    const ep = await endpoints.get(id);
    if (!ep) throw new TsnetError('NOT_FOUND', `endpoint ${id} not found`, { details: { field: 'EndpointID', value: id } });
    return ep;
  }

  /** The mappings of one binding: one per family the host address allows and the endpoint has. */
  function mappingsOf(ep: DockerEndpointRecord, b: z.output<typeof PortBindingSchema>, hostPort: Port, field: string): PortMapping[] {
    const proto = PROTO_NUMBERS[b.Proto];
    if (proto === undefined) throw invalid(`${field}.Proto`, `unknown protocol number ${b.Proto} (6 tcp, 17 udp, 132 sctp)`);
    const hostIp = b.HostIP !== undefined && b.HostIP !== null && b.HostIP !== '' ? parseIpAddr(b.HostIP, `${field}.HostIP`) : undefined;
    const addrs = ep.addresses.map((a) => prefixAddr(a as Prefix));
    const families: Family[] = hostIp !== undefined ? [addrFamily(hostIp)] : [...new Set(addrs.map((a) => addrFamily(a)))];
    const port = b.Port as Port;
    return families.flatMap((fam): PortMapping[] => {
      const containerIp = addrs.find((a) => addrFamily(a) === fam);
      // No IPv6 on the endpoint: an IPv6 host binding (dockerd adds "::" next to "0.0.0.0") cannot be
      // DNATed to an IPv4 container without a proxy; Docker's bridge without its proxy skips it too.
      if (containerIp === undefined) return [];
      const unspecified = hostIp === '0.0.0.0' || hostIp === '::';
      return [{ proto, ...(hostIp !== undefined && !unspecified ? { hostIp } : {}), hostPort: { start: hostPort, end: hostPort }, containerIp, containerPort: { start: port, end: port } }];
    });
  }

  /** Candidate host ports of a binding: the port, the range (first free wins) or ephemeral ones. */
  function candidates(b: z.output<typeof PortBindingSchema>): Port[] {
    const start = b.HostPort ?? 0;
    const end = Math.max(start, b.HostPortEnd ?? 0);
    if (start === 0) {
      const span = EPHEMERAL.end - EPHEMERAL.start + 1;
      const first = deps.randomInt(span);
      return Array.from({ length: EPHEMERAL_TRIES }, (_, i) => (EPHEMERAL.start + ((first + i * 7919) % span)) as Port);
    }
    return Array.from({ length: Math.min(end - start + 1, 1024) }, (_, i) => (start + i) as Port);
  }

  async function publish(net: DockerNetworkRecord, ep: DockerEndpointRecord, raw: unknown): Promise<PortMapping[]> {
    if (raw === undefined || raw === null) return [];
    if (!Array.isArray(raw)) throw invalid(`Options["${LABEL.portMap}"]`, 'expected an array of port bindings');
    if (raw.length > 0 && net.internal) throw invalid(`Options["${LABEL.portMap}"]`, `network ${net.name} is internal: it has no published ports`);
    const done: PortMapping[] = [];
    for (const [i, item] of raw.entries()) {
      const field = `Options["${LABEL.portMap}"][${i}]`;
      const r = PortBindingSchema.safeParse(item);
      if (!r.success) throw invalid(field, z.prettifyError(r.error).replaceAll('\n', '; '));
      let last: unknown;
      let placed = false;
      for (const hostPort of candidates(r.data)) {
        const mappings = mappingsOf(ep, r.data, hostPort, field);
        if (mappings.length === 0) {
          placed = true;
          break;
        }
        try {
          await driver.publish({ network: specOf(net), config: net.config, endpointId: ep.id as EndpointId, mappings });
          done.push(...mappings);
          placed = true;
          break;
        } catch (err) {
          if (!(err instanceof TsnetError && err.code === 'ALREADY_EXISTS')) throw err;
          last = err;
        }
      }
      if (!placed) throw last instanceof Error ? last : invalid(field, 'no free host port');
    }
    return done;
  }

  const api: DockerNetworkDriver = {
    getCapabilities: async () => ({ Scope: 'local', ConnectivityScope: 'local' }),
    // Every bridge network needs its gateway address (it is the bridge's own address).
    gwAllocCheck: async () => ({ SkipIPv4: false, SkipIPv6: false }),
    // Only sent for global-scope drivers by a swarm manager; nothing to allocate for a local one.
    allocateNetwork: async (req) => {
      parseNetworkId(req.NetworkID, 'NetworkID');
      return { Options: {} };
    },
    freeNetwork: async (req) => {
      parseNetworkId(req.NetworkID, 'NetworkID');
    },

    async createNetwork(req: NetworkRequest<'CreateNetwork'>) {
      const id = parseNetworkId(req.NetworkID, 'NetworkID');
      const subnets = [...subnetsOf(req.IPv4Data, 'IPv4Data'), ...subnetsOf(req.IPv6Data, 'IPv6Data')];
      if (subnets.length === 0) throw invalid('IPv4Data', 'the network has no subnet (use --ipam-driver tsnet or give --subnet)');
      const internalRaw = req.Options[LABEL.internal];
      const internal = internalRaw === true || internalRaw === 'true';
      const options = genericOptions(req.Options[LABEL.generic]);
      const spec: NetworkSpec = { id, name: id.slice(0, 12), subnets, internal, options };
      const config: DriverConfig = driver.validateNetwork(spec);
      const rec: DockerNetworkRecord = { id, name: spec.name, subnets, internal, options, config: { ...config } };
      await store.withLock(`docker/network/${id}`, async () => {
        const undo = new UndoStack();
        try {
          await networks.create(id, rec);
          undo.push('network record', () => networks.delete(id));
          undo.push('driver delete network', () => driver.deleteNetwork(spec, config));
          await driver.createNetwork(spec, config);
          undo.commit();
        } catch (err) {
          await undo.unwind(log);
          throw wrap(`create network ${id.slice(0, 12)}`, err);
        }
      });
      log.info('network created', { network: id, subnets: subnets.map((s) => s.subnet) });
    },

    async deleteNetwork(req) {
      const id = parseNetworkId(req.NetworkID, 'NetworkID');
      await store.withLock(`docker/network/${id}`, async () => {
        const n = await networks.get(id);
        if (!n) return;
        await teardownAll([
          { label: 'driver', run: () => driver.deleteNetwork(specOf(n), n.config) },
          { label: 'record', run: () => networks.delete(id) },
        ]).catch((err: unknown) => {
          throw wrap(`delete network ${id.slice(0, 12)}`, err);
        });
      });
      log.info('network deleted', { network: id });
    },

    async createEndpoint(req: NetworkRequest<'CreateEndpoint'>): Promise<EndpointInterface | undefined> {
      const net = await requireNetwork(req.NetworkID);
      const id = parseEndpointId(req.EndpointID, 'EndpointID');
      const addresses: Prefix[] = [];
      for (const [field, raw] of [['Interface.Address', req.Interface.Address], ['Interface.AddressIPv6', req.Interface.AddressIPv6]] as const) {
        if (raw === '') continue;
        const p = parsePrefix(raw, field);
        if (!net.subnets.some((s) => prefixContains(s.subnet as Prefix, prefixAddr(p)))) throw invalid(field, `${raw} is outside the network's subnets (${net.subnets.map((s) => s.subnet).join(', ')})`);
        addresses.push(p);
      }
      if (addresses.length === 0) throw invalid('Interface.Address', 'an address is required (tsnet does not pick addresses itself: use --ipam-driver tsnet)');
      const givenMac = req.Interface.MacAddress !== '' ? parseMac(req.Interface.MacAddress, 'Interface.MacAddress') : undefined;
      const mac: MacAddr = givenMac ?? randomMac(deps.randomHex);
      const rec: DockerEndpointRecord = {
        id, networkId: net.id, addresses, mac,
        hostIf: hostIfName(deps.randomHex), peerIf: `tsp${deps.randomHex(4).slice(0, 7)}`, published: false, ports: [],
      };
      const undo = new UndoStack();
      try {
        await endpoints.create(id, rec);
        undo.push('endpoint record', () => endpoints.delete(id));
        undo.push('veth', () => driver.leave({ network: specOf(net), config: net.config, endpointId: id, sandbox: { kind: 'host' }, ifName: rec.peerIf as IfName, hostIf: rec.hostIf as IfName }));
        await joinHostPeer({ network: specOf(net), config: net.config, endpointId: id, hostIf: rec.hostIf as IfName, peerIf: rec.peerIf as IfName, mac });
        undo.commit();
      } catch (err) {
        await undo.unwind(log);
        throw wrap(`create endpoint ${id.slice(0, 12)}`, err);
      }
      log.info('endpoint created', { network: net.id, endpoint: id, addresses, hostIf: rec.hostIf });
      // Only what the request left empty may be returned (dockerd refuses to overwrite a field).
      return givenMac === undefined ? { MacAddress: mac } : undefined;
    },

    async endpointOperInfo(req) {
      await requireNetwork(req.NetworkID);
      const ep = await requireEndpoint(req.EndpointID);
      // Not Docker's own keys: dockerd type-asserts com.docker.network.endpoint.macaddress to a Go
      // net.HardwareAddr, which a JSON string from a remote driver is not.
      return { 'tsnet.hostInterface': ep.hostIf, 'tsnet.ports': ep.ports };
    },

    async deleteEndpoint(req) {
      const id = parseEndpointId(req.EndpointID, 'EndpointID');
      const ep = await endpoints.get(id);
      if (!ep) return;
      const net = await networks.get(ep.networkId);
      await teardownAll([
        { label: 'ports', run: () => (ep.published ? driver.unpublish(id) : Promise.resolve()) },
        ...(net
          ? [{ label: 'veth', run: () => driver.leave({ network: specOf(net), config: net.config, endpointId: id, sandbox: { kind: 'host' }, ifName: ep.peerIf as IfName, hostIf: ep.hostIf as IfName }) }]
          : []),
        { label: 'record', run: () => endpoints.delete(id) },
      ]).catch((err: unknown) => {
        throw wrap(`delete endpoint ${id.slice(0, 12)}`, err);
      });
      log.info('endpoint deleted', { endpoint: id });
    },

    async join(req): Promise<JoinResponse> {
      const net = await requireNetwork(req.NetworkID);
      const ep = await requireEndpoint(req.EndpointID);
      const v4 = net.subnets.find((s) => addrFamily(s.subnet as Prefix) === 4);
      const v6 = net.subnets.find((s) => addrFamily(s.subnet as Prefix) === 6);
      return {
        InterfaceName: { SrcName: ep.peerIf, DstPrefix: 'eth' },
        ...(!net.internal && v4 ? { Gateway: v4.gateway } : {}),
        ...(!net.internal && v6 ? { GatewayIPv6: v6.gateway } : {}),
        StaticRoutes: [],
        // An internal network has no gateway on purpose: dockerd must not add a gwbridge leg.
        DisableGatewayService: net.internal,
      };
    },

    // The veth pair lives until DeleteEndpoint: after Leave dockerd moves the container end back
    // to the host namespace under its SrcName, as with its own bridge driver.
    async leave(req) {
      parseNetworkId(req.NetworkID, 'NetworkID');
      parseEndpointId(req.EndpointID, 'EndpointID');
    },

    async programExternalConnectivity(req) {
      const net = await requireNetwork(req.NetworkID);
      const id = parseEndpointId(req.EndpointID, 'EndpointID');
      await store.withLock(`docker/endpoint/${id}`, async () => {
        const found = await requireEndpoint(req.EndpointID);
        const raw = req.Options[LABEL.portMap];
        if (!Array.isArray(raw) || raw.length === 0) {
          if (raw !== undefined && raw !== null && !Array.isArray(raw)) throw invalid(`Options["${LABEL.portMap}"]`, 'expected an array of port bindings');
          return;
        }
        const ep: DockerEndpointRecord = found.published ? found : await endpoints.put(found.id, { ...found, published: true });
        try {
          const ports = await publish(net, ep, raw);
          await endpoints.put(ep.id, { ...ep, ports: [...ep.ports, ...ports] as DockerEndpointRecord['ports'] });
          if (ports.length > 0) log.info('ports published', { endpoint: ep.id, ports: ports.length });
        } catch (err) {
          await driver.unpublish(ep.id as EndpointId).catch((e: unknown) => log.warn('undo publish failed', { endpoint: ep.id, err: e }));
          if (ep.ports.length > 0) await endpoints.put(ep.id, { ...ep, ports: [] });
          throw wrap(`publish ports of ${ep.id.slice(0, 12)}`, err);
        }
      });
    },

    async revokeExternalConnectivity(req) {
      parseNetworkId(req.NetworkID, 'NetworkID');
      const id = parseEndpointId(req.EndpointID, 'EndpointID');
      await store.withLock(`docker/endpoint/${id}`, async () => {
        const ep = await endpoints.get(id);
        if (ep !== undefined && !ep.published) return;
        await driver.unpublish(id);
        if (ep) await endpoints.put(id, { ...ep, published: false, ports: [] });
      });
    },

    async restore() {
      const [nets, eps] = await Promise.all([networks.list(), endpoints.list()]);
      for (const e of [...nets.errors, ...eps.errors]) log.warn('unreadable docker record', { err: e });
      const byId = new Map(nets.entries.map((e) => [e.id, e.record]));
      const ports: PublishRequest[] = eps.entries.flatMap(({ record: ep }) => {
        const n = byId.get(ep.networkId);
        return n && ep.ports.length > 0 ? [{ network: specOf(n), config: n.config, endpointId: ep.id as EndpointId, mappings: ep.ports as PortMapping[] }] : [];
      });
      const r = await driver.restore({ networks: nets.entries.map((e) => ({ spec: specOf(e.record), config: e.record.config })), ports });
      if (r.networks.length > 0 || r.endpoints.length > 0) log.info('restored', { networks: r.networks, endpoints: r.endpoints });
      return r.networks;
    },
  };
  return api;
}
