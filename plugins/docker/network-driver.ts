/**
 * Docker's remote NetworkDriver: a translator of Docker's calls into the controller's requests, the
 * same house as every other door (cnm → drivers/bridge → sys/firewall, the same records, the same
 * port picker). Docker owns the sandbox and the addresses (its IPAM calls reach ipam-driver.ts):
 * CreateNetwork is a door network with Docker's id and subnets; CreateEndpoint makes the veth pair
 * with the container end left in the host namespace under a temporary name (as Docker's own bridge
 * driver does); Join hands that name to dockerd, which moves it into the sandbox, renames it eth<N>
 * and configures addresses and the default route through the returned gateway; DeleteEndpoint
 * removes the pair. ProgramExternalConnectivity publishes ports by DNAT, no proxy.
 *
 * The records survive the plugin's restart and dockerd's: `restore()` re-creates missing bridges
 * and firewall rules at start (the controller's firewall reload).
 */
import { z } from 'zod';
import { TsnetError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import {
  addrFamily, parseEndpointId, parseIpAddr, parseNetworkId, parsePrefix, parseSubnet, prefixAddr, prefixContains,
  type Family, type IfName, type IpAddr, type Port, type Prefix, type Proto,
} from '../../core/net.js';
import type { Controller, PortRequest } from '../../cnm/controller.js';
import type { EndpointRecord } from '../../cnm/model.js';
import type { EndpointInterface, IpamData, JoinResponse, NetworkDriverApi, NetworkRequest } from './protocol.js';

/** Docker's option keys (libnetwork/netlabel). */
export const LABEL = {
  generic: 'com.docker.network.generic',
  internal: 'com.docker.network.internal',
  portMap: 'com.docker.network.portmap',
} as const;

const PROTO_NUMBERS: Readonly<Record<number, Proto>> = { 6: 'tcp', 17: 'udp', 132: 'sctp' };
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
  /** The engine's controller: Docker's networks and endpoints are door records of it. */
  readonly controller: Controller;
  /** tsnet's driver behind this Docker driver name (`tsnet`: bridge, `tsnet-macvlan`: macvlan). */
  readonly driver: 'bridge' | 'macvlan';
  readonly log: Logger;
  readonly randomHex: (bytes: number) => string;
}

export interface DockerNetworkDriver extends NetworkDriverApi {
  /** Re-creates bridges and firewall rules missing in the kernel; returns the network names restored. */
  restore(): Promise<string[]>;
}

function invalid(field: string, msg: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: ${msg}`, { details: { field } });
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

type Binding = z.output<typeof PortBindingSchema>;

/**
 * Docker's bindings as port requests for the controller's port picker. dockerd sends `0.0.0.0` and
 * `::` bindings side by side for one `-p`: they become one request for every address of the
 * endpoint's families (one host port for both, as Docker 27+ gives); a binding of a family the
 * endpoint has no address of is dropped (it cannot be DNATed without a proxy, and Docker's bridge
 * without its proxy skips it too).
 */
export function portRequests(raw: unknown, families: readonly Family[]): PortRequest[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw invalid(`Options["${LABEL.portMap}"]`, 'expected an array of port bindings');
  const groups = new Map<string, { b: Binding; hostIps: (IpAddr | undefined)[]; field: string }>();
  for (const [i, item] of raw.entries()) {
    const field = `Options["${LABEL.portMap}"][${i}]`;
    const r = PortBindingSchema.safeParse(item);
    if (!r.success) throw invalid(field, z.prettifyError(r.error).replaceAll('\n', '; '));
    const b = r.data;
    if (PROTO_NUMBERS[b.Proto] === undefined) throw invalid(`${field}.Proto`, `unknown protocol number ${b.Proto} (6 tcp, 17 udp, 132 sctp)`);
    const hostIp = b.HostIP !== undefined && b.HostIP !== null && b.HostIP !== '' ? parseIpAddr(b.HostIP, `${field}.HostIP`) : undefined;
    const key = `${b.Proto}/${b.Port}/${b.HostPort ?? 0}/${b.HostPortEnd ?? 0}`;
    const g = groups.get(key) ?? { b, hostIps: [], field };
    g.hostIps.push(hostIp);
    groups.set(key, g);
  }
  const out: PortRequest[] = [];
  for (const { b, hostIps } of groups.values()) {
    const proto = PROTO_NUMBERS[b.Proto] as Proto;
    const start = b.HostPort ?? 0;
    const end = Math.max(start, b.HostPortEnd ?? 0);
    const ports = start === 0 ? {} : end > start ? { within: { start: start as Port, end: end as Port } } : { hostPort: { start: start as Port, end: start as Port } };
    const containerPort = { start: b.Port as Port, end: b.Port as Port };
    const unspecified = (ip: IpAddr | undefined): boolean => ip === undefined || ip === '0.0.0.0' || ip === '::';
    if (hostIps.every(unspecified)) {
      const fams = new Set(hostIps.map((ip) => (ip === undefined ? 0 : addrFamily(ip))));
      const wanted = fams.has(0) ? families : families.filter((f) => fams.has(f));
      if (wanted.length === 0) continue;
      // Every family the endpoint has: no host address; one family only: that family's "any".
      const hostIp = wanted.length === families.length ? undefined : (wanted[0] === 4 ? '0.0.0.0' : '::') as IpAddr;
      out.push({ proto, ...(hostIp !== undefined ? { hostIp } : {}), ...ports, containerPort });
      continue;
    }
    for (const ip of hostIps) {
      if (ip !== undefined && !families.includes(addrFamily(ip))) continue;
      out.push({ proto, ...(ip !== undefined && !unspecified(ip) ? { hostIp: ip } : ip !== undefined ? { hostIp: ip } : {}), ...ports, containerPort });
    }
  }
  return out;
}

export function createDockerNetworkDriver(deps: DockerNetworkDeps): DockerNetworkDriver {
  const { controller } = deps;
  const log = deps.log.child({ component: 'docker-driver' });

  async function requireEndpoint(raw: string): Promise<EndpointRecord> {
    const id = parseEndpointId(raw, 'EndpointID');
    const ep = await controller.getEndpoint(id);
    if (!ep) throw new TsnetError('NOT_FOUND', `endpoint ${id} not found`, { details: { field: 'EndpointID', value: id } });
    return ep;
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
      const n = await controller.createDoorNetwork({ door: 'docker', id, name: `docker-${id.slice(0, 12)}`, driver: deps.driver, subnets, internal, options: genericOptions(req.Options[LABEL.generic]) });
      log.info('network created', { network: id, driver: deps.driver, bridge: n.config['bridge'], parent: n.config['parent'], subnets: subnets.map((s) => s.subnet) });
    },

    async deleteNetwork(req) {
      const id = parseNetworkId(req.NetworkID, 'NetworkID');
      await controller.deleteDoorNetwork(id);
      log.info('network deleted', { network: id });
    },

    async createEndpoint(req: NetworkRequest<'CreateEndpoint'>): Promise<EndpointInterface | undefined> {
      const netId = parseNetworkId(req.NetworkID, 'NetworkID');
      const net = await controller.findNetwork(netId);
      const id = parseEndpointId(req.EndpointID, 'EndpointID');
      const addresses: Prefix[] = [];
      for (const [field, raw] of [['Interface.Address', req.Interface.Address], ['Interface.AddressIPv6', req.Interface.AddressIPv6]] as const) {
        if (raw === '') continue;
        const p = parsePrefix(raw, field);
        if (!net.subnets.some((s) => prefixContains(s.subnet, prefixAddr(p)))) throw invalid(field, `${raw} is outside the network's subnets (${net.subnets.map((s) => s.subnet).join(', ')})`);
        addresses.push(p);
      }
      if (addresses.length === 0) throw invalid('Interface.Address', 'an address is required (tsnet does not pick addresses itself: use --ipam-driver tsnet)');
      const givenMac = req.Interface.MacAddress !== '' ? req.Interface.MacAddress : undefined;
      const ep = await controller.createDoorEndpoint({
        door: 'docker', id, network: net.id, addresses, ...(givenMac !== undefined ? { mac: givenMac } : {}),
        hostIf: `veth${deps.randomHex(4).slice(0, 7)}` as IfName, peerIf: `tsp${deps.randomHex(4).slice(0, 7)}` as IfName,
      });
      log.info('endpoint created', { network: net.id, endpoint: id, addresses, hostIf: ep.hostIf });
      // Only what the request left empty may be returned (dockerd refuses to overwrite a field).
      return givenMac === undefined && ep.mac !== undefined ? { MacAddress: ep.mac } : undefined;
    },

    async endpointOperInfo(req) {
      parseNetworkId(req.NetworkID, 'NetworkID');
      const ep = await requireEndpoint(req.EndpointID);
      // Not Docker's own keys: dockerd type-asserts com.docker.network.endpoint.macaddress to a Go
      // net.HardwareAddr, which a JSON string from a remote driver is not.
      return { 'tsnet.hostInterface': ep.hostIf, 'tsnet.ports': ep.ports };
    },

    async deleteEndpoint(req) {
      const id = parseEndpointId(req.EndpointID, 'EndpointID');
      await controller.deleteDoorEndpoint(id);
      log.info('endpoint deleted', { endpoint: id });
    },

    async join(req): Promise<JoinResponse> {
      const net = await controller.findNetwork(parseNetworkId(req.NetworkID, 'NetworkID'));
      const ep = await requireEndpoint(req.EndpointID);
      const v4 = net.subnets.find((s) => addrFamily(s.subnet) === 4);
      const v6 = net.subnets.find((s) => addrFamily(s.subnet) === 6);
      return {
        InterfaceName: { SrcName: ep.peerIf ?? ep.ifName, DstPrefix: 'eth' },
        ...(!net.internal && v4 ? { Gateway: v4.gateway } : {}),
        ...(!net.internal && v6 ? { GatewayIPv6: v6.gateway } : {}),
        StaticRoutes: [],
        // An internal network has no gateway on purpose: dockerd must not add a gwbridge leg; a
        // macvlan network's gateway is the LAN's router (and no published port goes through it).
        DisableGatewayService: net.internal || net.driver === 'macvlan',
      };
    },

    // The veth pair lives until DeleteEndpoint: after Leave dockerd moves the container end back
    // to the host namespace under its SrcName, as with its own bridge driver.
    async leave(req) {
      parseNetworkId(req.NetworkID, 'NetworkID');
      parseEndpointId(req.EndpointID, 'EndpointID');
    },

    async programExternalConnectivity(req) {
      parseNetworkId(req.NetworkID, 'NetworkID');
      const ep = await requireEndpoint(req.EndpointID);
      const families = [...new Set(ep.addresses.map((a) => addrFamily(a)))];
      const asks = portRequests(req.Options[LABEL.portMap], families);
      if (asks.length === 0) return;
      const done = await controller.publishDoorEndpoint(ep.id, asks);
      log.info('ports published', { endpoint: ep.id, ports: done.ports.length });
    },

    async revokeExternalConnectivity(req) {
      parseNetworkId(req.NetworkID, 'NetworkID');
      await controller.unpublishDoorEndpoint(parseEndpointId(req.EndpointID, 'EndpointID'));
    },

    async restore() {
      const r = await controller.reloadFirewall({ force: false });
      if (r.networks.length > 0 || r.endpoints.length > 0) log.info('restored', { networks: r.networks, endpoints: r.endpoints });
      return r.networks;
    },
  };
  return api;
}
