/**
 * The controller of the library API: the CNM controller (cnm/controller.ts) plus typed events,
 * layered on top so the controller itself stays unchanged. Events are emitted after an operation
 * succeeded (a failed, rolled-back operation emits nothing); a listener that throws is logged and
 * never fails the operation or the other listeners.
 */
import type {
  ConnectRequest as CnmConnectRequest, Controller, CreateSandboxRequest as CnmCreateSandboxRequest, PortRequest, SandboxHandle,
} from '../cnm/controller.js';
import type { EndpointRecord, NetworkRecord, SandboxRecord } from '../cnm/model.js';
import { TsnetError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { parseIpAddr, parsePort, parseProto, prefixAddr, type IpAddr } from '../core/net.js';
import type { PortRange } from '../sys/firewall/api.js';

/** A port to publish, in plain numbers: `{ hostPort: 8080, containerPort: 80 }` or ranges. */
export interface PublishPort {
  /** Default tcp. */
  readonly proto?: 'tcp' | 'udp' | 'sctp';
  /** Default: every local address (IPv4, and IPv6 on a dual-stack network). */
  readonly hostIp?: string;
  readonly hostPort: number | { readonly start: number; readonly end: number };
  readonly containerPort: number | { readonly start: number; readonly end: number };
}
export type ConnectRequest = Omit<CnmConnectRequest, 'ports'> & { readonly ports?: readonly PublishPort[] };
export type CreateSandboxRequest = Omit<CnmCreateSandboxRequest, 'connect'> & { readonly connect?: ConnectRequest };

/** Parses the plain-number ports of the library into the controller's (INVALID_CONFIG naming the field). */
export function toPortRequests(ports: readonly PublishPort[] | undefined): PortRequest[] | undefined {
  if (ports === undefined) return undefined;
  return ports.map((p, i) => {
    const field = `ports[${i}]`;
    const range = (v: PublishPort['hostPort'], f: string): PortRange => {
      const r = typeof v === 'number' ? { start: v, end: v } : v;
      const start = parsePort(r.start, `${field}.${f}`);
      const end = parsePort(r.end, `${field}.${f}`);
      if (end < start) throw new TsnetError('INVALID_CONFIG', `${field}.${f}: range ${start}-${end} is reversed`, { details: { field: `${field}.${f}` } });
      return { start, end };
    };
    return {
      proto: parseProto(p.proto ?? 'tcp', `${field}.proto`),
      ...(p.hostIp !== undefined ? { hostIp: parseIpAddr(p.hostIp, `${field}.hostIp`) } : {}),
      hostPort: range(p.hostPort, 'hostPort'),
      containerPort: range(p.containerPort, 'containerPort'),
    };
  });
}
const cnmConnect = (req: ConnectRequest | undefined): CnmConnectRequest | undefined => {
  if (req === undefined) return undefined;
  const { ports, ...rest } = req;
  const parsed = toPortRequests(ports);
  return parsed !== undefined ? { ...rest, ports: parsed } : rest;
};

/** Every event and its payload. */
export interface TsnetEvents {
  'network.created': { readonly network: NetworkRecord };
  'network.removed': { readonly network: NetworkRecord };
  /** An endpoint was made on a network for a sandbox (always followed by `endpoint.joined`). */
  'endpoint.created': { readonly endpoint: EndpointRecord; readonly network: NetworkRecord };
  /** The endpoint's interface is up in the sandbox, with its addresses (and published ports). */
  'endpoint.joined': { readonly endpoint: EndpointRecord; readonly network: NetworkRecord; readonly sandbox: SandboxRecord };
  /** The endpoint left its sandbox and was removed (disconnect, or its sandbox was deleted). */
  'endpoint.removed': { readonly endpoint: EndpointRecord; readonly sandbox: SandboxRecord };
  'sandbox.created': { readonly sandbox: SandboxRecord };
  'sandbox.removed': { readonly sandbox: SandboxRecord };
}
export type TsnetEventName = keyof TsnetEvents;
export type TsnetListener<E extends TsnetEventName> = (event: TsnetEvents[E]) => void;

/** One name the embedded DNS would answer on a network, with the endpoint's addresses. */
export interface DnsRecord {
  readonly name: string;
  readonly addresses: readonly IpAddr[];
  readonly endpointId: string;
}

/** The CNM controller's operations as they are (their docs are in cnm/controller.ts). */
type Passed = 'createNetwork' | 'deleteNetwork' | 'pruneNetworks' | 'listNetworks' | 'findNetwork' | 'inspectNetwork' | 'deleteSandbox' | 'findSandbox' | 'listSandboxes' | 'disconnect' | 'reconcile';

export interface TsnetController extends Pick<Controller, Passed> {
  /** A sandbox (network namespace + hosts/resolv.conf), connected at once when `mode` names a network. */
  createSandbox(req: CreateSandboxRequest): Promise<SandboxHandle>;
  /** The sandbox's endpoints (one per network), in interface order. */
  endpointsOf(sandbox: string): Promise<EndpointRecord[]>;
  /** Creates an endpoint and joins it to the sandbox: static addresses, aliases, MAC, published ports. */
  connect(sandbox: string, network: string, req?: ConnectRequest): Promise<EndpointRecord>;
  /** The names (sandbox name, hostname, aliases) and addresses of every endpoint on the network. */
  dnsRecords(network: string): Promise<DnsRecord[]>;
  /** Subscribes; returns the function that unsubscribes. */
  on<E extends TsnetEventName>(event: E, listener: TsnetListener<E>): () => void;
  off<E extends TsnetEventName>(event: E, listener: TsnetListener<E>): void;
}

export function withEvents(c: Controller, log: Logger): TsnetController {
  const listeners = new Map<TsnetEventName, Set<(e: never) => void>>();
  const emit = <E extends TsnetEventName>(event: E, payload: TsnetEvents[E]): void => {
    for (const fn of [...(listeners.get(event) ?? [])]) {
      try {
        (fn as TsnetListener<E>)(payload);
      } catch (err) {
        log.warn('event listener failed', { event, err });
      }
    }
  };
  const joined = async (sandbox: SandboxRecord, endpoints: readonly EndpointRecord[]): Promise<void> => {
    for (const endpoint of endpoints) {
      const network = await c.findNetwork(endpoint.networkId).catch(() => undefined);
      if (network === undefined) continue;
      emit('endpoint.created', { endpoint, network });
      emit('endpoint.joined', { endpoint, network, sandbox });
    }
  };
  const off = <E extends TsnetEventName>(event: E, listener: TsnetListener<E>): void => {
    listeners.get(event)?.delete(listener as (e: never) => void);
  };

  return {
    async createNetwork(req) {
      const network = await c.createNetwork(req);
      emit('network.created', { network });
      return network;
    },
    async deleteNetwork(idOrName) {
      const network = await c.findNetwork(idOrName);
      await c.deleteNetwork(network.id);
      emit('network.removed', { network });
    },
    async pruneNetworks() {
      const before = await c.listNetworks();
      const removed = await c.pruneNetworks();
      for (const network of before.filter((n) => removed.includes(n.name))) emit('network.removed', { network });
      return removed;
    },
    listNetworks: () => c.listNetworks(),
    findNetwork: (x) => c.findNetwork(x),
    inspectNetwork: (x) => c.inspectNetwork(x),
    async createSandbox(req) {
      const { connect, ...rest } = req;
      const conn = cnmConnect(connect);
      const handle = await c.createSandbox(conn !== undefined ? { ...rest, connect: conn } : rest);
      emit('sandbox.created', { sandbox: handle.record });
      await joined(handle.record, await c.endpointsOf(handle.record.id));
      return handle;
    },
    async deleteSandbox(idOrName) {
      const sandbox = await c.findSandbox(idOrName);
      const endpoints = await c.deleteSandbox(sandbox.id);
      for (const endpoint of endpoints) emit('endpoint.removed', { endpoint, sandbox });
      emit('sandbox.removed', { sandbox });
      return endpoints;
    },
    findSandbox: (x) => c.findSandbox(x),
    listSandboxes: () => c.listSandboxes(),
    endpointsOf: async (x) => c.endpointsOf((await c.findSandbox(x)).id),
    async connect(sandbox, network, req) {
      const endpoint = await c.connect(sandbox, network, cnmConnect(req));
      const sb = await c.findSandbox(endpoint.sandboxId);
      await joined(sb, [endpoint]);
      return endpoint;
    },
    async disconnect(sandbox, network) {
      const sb = await c.findSandbox(sandbox);
      const net = await c.findNetwork(network);
      const endpoint = (await c.endpointsOf(sb.id)).find((e) => e.networkId === net.id);
      await c.disconnect(sb.id, net.id);
      if (endpoint) emit('endpoint.removed', { endpoint, sandbox: sb });
    },
    async dnsRecords(network) {
      const d = await c.inspectNetwork(network);
      const sandboxes = await c.listSandboxes();
      return d.endpoints.flatMap((e) => {
        const sb = sandboxes.find((s) => s.id === e.sandboxId);
        const names = [...new Set([e.sandboxName, sb?.hostname ?? '', ...e.aliases].filter((n) => n !== ''))];
        const addresses = e.addresses.map((a) => prefixAddr(a));
        return names.map((name) => ({ name, addresses, endpointId: e.id }));
      });
    },
    reconcile: () => c.reconcile(),
    on(event, listener) {
      let set = listeners.get(event);
      if (!set) listeners.set(event, (set = new Set()));
      set.add(listener as (e: never) => void);
      return () => off(event, listener);
    },
    off,
  };
}
