/**
 * An in-memory Firewall for tests of drivers and cnm: it records every call, keeps the intents
 * the real backends would program, and answers `list`/`remove*` the way they do (same validation,
 * same conflict rules, idempotent removes). `failNext` injects a failure: the next call (of one
 * operation, or any) rejects with that code and changes nothing.
 *
 * `firewallScenario` is a scripted sequence of calls whose observable results must be identical
 * for the fake and for each real backend; the unit test pins the fake's, the privileged tests
 * compare the real backends' with it.
 */
import { TsnetError, type ErrorCode } from '../../core/errors.js';
import {
  addrFamily,
  prefixesOverlap,
  type EndpointId,
  type IfName,
  type IpAddr,
  type NetworkId,
  type Port,
  type Prefix,
} from '../../core/net.js';
import type { EndpointPorts, Firewall, FirewallBackend, FirewallListing, NetworkPolicy, PortMapping } from './api.js';
import { conflictError, diffAtoms, dnatAtoms, planPorts, validateEndpointPorts, validateNetworkPolicy, type DnatRule } from './plan.js';

export type FirewallOp = 'ensureNetwork' | 'removeNetwork' | 'ensurePorts' | 'removePorts' | 'list' | 'removeAll';

export interface FirewallCall {
  readonly op: FirewallOp;
  readonly arg?: unknown;
  /** removePorts: what the caller said was published. */
  readonly published?: EndpointPorts;
}

export interface FakeFirewall extends Firewall {
  /** Every call, in order (including failed ones). */
  readonly calls: readonly FirewallCall[];
  /** The next call (of `op`, or any op) rejects with `code` and changes nothing. Stackable. */
  failNext(code?: ErrorCode, op?: FirewallOp): void;
  /** Current state: the networks and the DNAT rules per endpoint. */
  networks(): ReadonlyMap<NetworkId, NetworkPolicy>;
  ports(): ReadonlyMap<EndpointId, readonly DnatRule[]>;
}

export function createFakeFirewall(opts: { readonly backend?: FirewallBackend } = {}): FakeFirewall {
  const calls: FirewallCall[] = [];
  const failures: { code: ErrorCode; op?: FirewallOp }[] = [];
  const nets = new Map<NetworkId, NetworkPolicy>();
  const ports = new Map<EndpointId, DnatRule[]>();

  const enter = (op: FirewallOp, arg?: unknown, published?: EndpointPorts): void => {
    calls.push({ op, ...(arg === undefined ? {} : { arg }), ...(published === undefined ? {} : { published }) });
    const i = failures.findIndex((f) => f.op === undefined || f.op === op);
    if (i >= 0) {
      const [f] = failures.splice(i, 1);
      throw new TsnetError(f?.code ?? 'INTERNAL', `fake firewall: injected failure in ${op}`);
    }
  };

  return {
    backend: opts.backend ?? 'nftables',
    calls,
    failNext(code: ErrorCode = 'INTERNAL', op?: FirewallOp) {
      failures.push(op === undefined ? { code } : { code, op });
    },
    networks: () => nets,
    ports: () => ports,

    async ensureNetwork(p: NetworkPolicy) {
      enter('ensureNetwork', p);
      const v = validateNetworkPolicy(p);
      const masq = (x: NetworkPolicy): Prefix[] => (x.masquerade && !x.internal ? [...x.subnets] : []);
      for (const [id, other] of nets) {
        if (id === v.networkId) continue;
        if (other.bridge === v.bridge) throw new TsnetError('ALREADY_EXISTS', `ensure network ${v.networkId}: bridge ${v.bridge} is used by network ${id}`, { details: { field: 'bridge', value: v.bridge, owner: id } });
        for (const s of masq(v)) {
          const o = masq(other).find((x) => addrFamily(x) === addrFamily(s) && prefixesOverlap(x, s));
          if (o) throw new TsnetError('ALREADY_EXISTS', `ensure network ${v.networkId}: subnet ${s} overlaps ${o} of network ${id}`, { details: { field: 'subnets', value: s, owner: id } });
        }
      }
      nets.set(v.networkId, v);
    },

    async removeNetwork(id) {
      enter('removeNetwork', id);
      nets.delete(id);
    },

    async ensurePorts(p: EndpointPorts) {
      enter('ensurePorts', p);
      const v = validateEndpointPorts(p);
      const existing = [...ports.values()].flat().flatMap(dnatAtoms);
      const add: DnatRule[] = [];
      for (const r of planPorts(v)) {
        const diff = diffAtoms(existing, dnatAtoms(r));
        const first = diff.conflicts[0];
        if (first) throw conflictError(first);
        if (diff.missing.length > 0) add.push(r);
      }
      if (add.length > 0) ports.set(v.endpointId, [...(ports.get(v.endpointId) ?? []), ...add]);
    },

    async removePorts(id, opts = {}) {
      enter('removePorts', id, opts.published);
      ports.delete(id);
    },

    async list(): Promise<FirewallListing> {
      enter('list');
      return { networks: [...nets.keys()].sort(), endpoints: [...ports.keys()].sort() };
    },

    async removeAll() {
      enter('removeAll');
      nets.clear();
      ports.clear();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// sample intents

const P = (n: number): Port => n as Port;
const range = (a: number, b = a): { start: Port; end: Port } => ({ start: P(a), end: P(b) });

/** A mapping from plain values: sampleMapping('tcp', [8000, 8100], [80], '10.0.0.2', '127.0.0.1'). */
export function sampleMapping(proto: PortMapping['proto'], host: [number, number?], ctr: [number, number?], containerIp: string, hostIp?: string): PortMapping {
  return {
    proto,
    ...(hostIp === undefined ? {} : { hostIp: hostIp as IpAddr }),
    hostPort: range(host[0], host[1]),
    containerIp: containerIp as IpAddr,
    containerPort: range(ctr[0], ctr[1]),
  };
}

/** Sample intents for golden tests: several network shapes and every mapping shape. */
export const SAMPLE_NETWORKS: Readonly<Record<string, NetworkPolicy>> = {
  'dual-stack-masquerade': {
    networkId: 'net1' as NetworkId,
    bridge: 'tsbr0' as IfName,
    subnets: ['10.88.0.0/24' as Prefix, 'fd88::/64' as Prefix],
    masquerade: true,
    internal: false,
    icc: true,
  },
  internal: {
    networkId: 'secret' as NetworkId,
    bridge: 'tsbr1' as IfName,
    subnets: ['10.89.0.0/24' as Prefix],
    masquerade: true,
    internal: true,
    icc: true,
  },
  'icc-off-no-masquerade': {
    networkId: 'quiet.net-2' as NetworkId,
    bridge: 'tsbr2' as IfName,
    subnets: ['10.90.0.0/16' as Prefix],
    masquerade: false,
    internal: false,
    icc: false,
  },
};

/** Every mapping shape, IPv4 and IPv6, with and without a host address. */
export const SAMPLE_PORTS: EndpointPorts = {
  endpointId: 'ep-1' as EndpointId,
  networkId: 'net1' as NetworkId,
  bridge: 'tsbr0' as IfName,
  mappings: [
    sampleMapping('tcp', [8080], [80], '10.88.0.2'),
    sampleMapping('udp', [5353], [53], '10.88.0.2', '192.168.1.10'),
    sampleMapping('tcp', [8000, 8100], [8000, 8100], '10.88.0.2'),
    sampleMapping('tcp', [7000, 7010], [80], '10.88.0.2', '127.0.0.1'),
    sampleMapping('tcp', [6000, 6002], [7000, 7002], '10.88.0.2'),
    sampleMapping('sctp', [3000, 3001], [3000, 3001], 'fd88::2', 'fd00::1'),
    sampleMapping('tcp', [8080], [80], 'fd88::2'),
    sampleMapping('udp', [4000, 4010], [53], 'fd88::2'),
  ],
};

// ---------------------------------------------------------------------------------------------
// the shared scenario

export interface ScenarioInput {
  /** Three bridge names (they need not exist: no traffic is sent). */
  readonly bridges: readonly [IfName, IfName, IfName];
}

/**
 * Runs a fixed sequence of calls and returns what was observed: "ok", an error code, or a
 * listing. Identical for every correct backend.
 */
export async function firewallScenario(fw: Firewall, input: ScenarioInput): Promise<string[]> {
  const out: string[] = [];
  const [b1, b2, b3] = input.bridges;
  const step = async (name: string, f: () => Promise<unknown>): Promise<void> => {
    try {
      const r = await f();
      out.push(`${name}: ${r === undefined ? 'ok' : JSON.stringify(r)}`);
    } catch (err) {
      out.push(`${name}: ${err instanceof TsnetError ? err.code : `throws ${String(err)}`}`);
    }
  };
  const net = (id: string, bridge: IfName, subnets: string[], extra: Partial<NetworkPolicy> = {}): NetworkPolicy => ({
    networkId: id as NetworkId,
    bridge,
    subnets: subnets as Prefix[],
    masquerade: true,
    internal: false,
    icc: true,
    ...extra,
  });
  const eps = (id: string, networkId: string, bridge: IfName, mappings: PortMapping[]): EndpointPorts => ({
    endpointId: id as EndpointId,
    networkId: networkId as NetworkId,
    bridge,
    mappings,
  });
  const m = sampleMapping;
  const e1 = eps('e1', 'n1', b1, [
    m('tcp', [8080], [80], '10.77.1.2'),
    m('udp', [5353], [53], '10.77.1.2'),
    m('tcp', [9000, 9010], [9000, 9010], '10.77.1.2'),
    m('tcp', [7000, 7010], [80], '10.77.1.2', '127.0.0.1'),
    m('tcp', [6000, 6002], [7000, 7002], '10.77.1.2'),
    m('tcp', [8080], [80], 'fd77:1::2'),
    m('sctp', [3000, 3001], [3000, 3001], 'fd77:1::2'),
  ]);

  await step('list empty', () => fw.list());
  await step('ensure n1', () => fw.ensureNetwork(net('n1', b1, ['10.77.1.0/24', 'fd77:1::/64'])));
  await step('ensure n1 again', () => fw.ensureNetwork(net('n1', b1, ['10.77.1.0/24', 'fd77:1::/64'])));
  await step('ensure n2 internal', () => fw.ensureNetwork(net('n2', b2, ['10.77.2.0/24'], { internal: true, icc: false })));
  await step('ensure n3 on the bridge of n1', () => fw.ensureNetwork(net('n3', b1, ['10.77.3.0/24'])));
  await step('ensure n3 overlapping n1', () => fw.ensureNetwork(net('n3', b3, ['10.77.0.0/16'])));
  await step('ensure n3 bad subnet', () => fw.ensureNetwork(net('n3', b3, ['10.77.3.0/33'])));
  await step('list networks', () => fw.list());
  await step('ports e1', () => fw.ensurePorts(e1));
  await step('ports e1 again', () => fw.ensurePorts(e1));
  await step('ports e1 subset', () => fw.ensurePorts({ ...e1, mappings: e1.mappings.slice(0, 2) }));
  await step('ports e1 one port of its shifted range', () => fw.ensurePorts({ ...e1, mappings: [m('tcp', [6001], [7001], '10.77.1.2')] }));
  await step('ports e2', () => fw.ensurePorts(eps('e2', 'n1', b1, [m('tcp', [8081], [80], '10.77.1.3'), m('udp', [9005, 9006], [53], '10.77.1.3')])));
  await step('ports e3 taking 8080', () => fw.ensurePorts(eps('e3', 'n1', b1, [m('tcp', [8888], [80], '10.77.1.4'), m('tcp', [8080], [80], '10.77.1.4')])));
  await step('ports e3 overlapping a range', () => fw.ensurePorts(eps('e3', 'n1', b1, [m('tcp', [9005, 9020], [9005, 9020], '10.77.1.4')])));
  await step('ports e3 into a shifted range', () => fw.ensurePorts(eps('e3', 'n1', b1, [m('tcp', [6001], [80], '10.77.1.4')])));
  await step('ports e3 bad port', () => fw.ensurePorts(eps('e3', 'n1', b1, [m('tcp', [0], [80], '10.77.1.4')])));
  await step('ports e3 same port other address', () => fw.ensurePorts(eps('e3', 'n1', b1, [m('tcp', [8080], [80], '10.77.1.4', '10.77.1.1')])));
  await step('list all', () => fw.list());
  await step('remove ports e1', () => fw.removePorts('e1' as EndpointId));
  await step('remove ports e1 again', () => fw.removePorts('e1' as EndpointId));
  await step('ports e3 takes 8080 now', () => fw.ensurePorts(eps('e3', 'n1', b1, [m('tcp', [8080], [80], '10.77.1.4')])));
  await step('list after port removal', () => fw.list());
  await step('remove network n1', () => fw.removeNetwork('n1' as NetworkId));
  await step('remove network n1 again', () => fw.removeNetwork('n1' as NetworkId));
  await step('remove network unknown', () => fw.removeNetwork('nope' as NetworkId));
  await step('ensure n3 now that n1 is gone', () => fw.ensureNetwork(net('n3', b1, ['10.77.0.0/16'])));
  await step('list after network removal', () => fw.list());
  await step('remove all', () => fw.removeAll());
  await step('remove all again', () => fw.removeAll());
  await step('list after remove all', () => fw.list());
  await step('remove ports on empty', () => fw.removePorts('e2' as EndpointId));
  await step('remove network on empty', () => fw.removeNetwork('n2' as NetworkId));
  return out;
}
