/**
 * Intent → backend-neutral rule IR. Pure: no I/O, no clock, no randomness; golden-tested.
 *
 * - validate*: check EVERY field of an intent before any process runs (INVALID_CONFIG naming the
 *   field), normalize (subnets to their network prefix, 0.0.0.0/:: host address to "any").
 * - plan*: the rules a network or an endpoint owns. Every rule carries its owner.
 * - dnatAtoms / findConflicts: the unit of port ownership shared by all backends and the fake, so
 *   that "already published" means the same thing everywhere (see DnatAtom).
 *
 * - planLetThrough: the few rules tsnet needs in ANOTHER firewall's chains (Docker's DOCKER-USER,
 *   or iptables FORWARD) when that firewall drops forwarded packets: a drop in any table wins over
 *   tsnet's accept, so without them Docker (FORWARD policy drop + br_netfilter) or ufw would cut
 *   tsnet's containers off. Drivers never see this: it follows from the network's intent and the
 *   host's state, both given here.
 *
 * Rules that later features add fit as new `kind`s (e.g. direct-access filtering per bridge); the
 * masquerade for 127.0.0.1 publishing (route_localnet) and hairpin masquerade are here already.
 */
import ipaddr from 'ipaddr.js';
import { TsnetError } from '../../core/errors.js';
import {
  addrFamily,
  parseEndpointId,
  parseIfName,
  parseIpAddr,
  parseNetworkId,
  parsePrefix,
  parseProto,
  prefixNetwork,
  type EndpointId,
  type Family,
  type IfName,
  type IpAddr,
  type NetworkId,
  type Port,
  type Prefix,
  type Proto,
} from '../../core/net.js';
import type { EndpointPorts, FirewallBackend, NetworkPolicy, PortMapping, PortRange } from './api.js';

export type Verdict = 'accept' | 'drop';

/** Rules every backend installs once (its skeleton), owned by tsnet itself. */
export type BaseRule =
  /** Forwarded packets of established/related connections are accepted. */
  | { readonly kind: 'forward-established' }
  /**
   * Packets to a loopback address that arrive on any interface but `lo` are dropped before NAT, so
   * a port published on 127.0.0.1 (or ::1) is unreachable from neighbours.
   */
  | { readonly kind: 'loopback-guard'; readonly family: Family };

/** Rules a network owns, in evaluation order. */
export type NetworkRule =
  /**
   * Forwarded traffic whose output interface is the bridge. `match`: 'same-bridge' = it also came
   * in through the bridge (icc); 'published' = its destination was DNATed (a published port);
   * 'any' = everything else (direct access from outside, other bridges).
   */
  | {
      readonly kind: 'forward-in';
      readonly owner: NetworkId;
      readonly bridge: IfName;
      readonly match: 'same-bridge' | 'published' | 'any';
      readonly verdict: Verdict;
    }
  /**
   * Forwarded traffic from the bridge to ANOTHER interface. 'drop' (an internal network) is decided
   * before any other network's rule is consulted, so nothing leaves the bridge, not even a
   * connection DNATed to another network's published port; 'accept' (egress) is decided after the
   * destination network's forward-in rules had their say (isolation between networks).
   */
  | { readonly kind: 'forward-out'; readonly owner: NetworkId; readonly bridge: IfName; readonly verdict: Verdict }
  /** Source NAT for `from` leaving through any interface except `notOut`. */
  | { readonly kind: 'masquerade'; readonly owner: NetworkId; readonly family: Family; readonly from: Prefix; readonly notOut: IfName }
  /** Hairpin: DNATed traffic from `from` going back out through `out` is masqueraded. */
  | { readonly kind: 'masquerade-hairpin'; readonly owner: NetworkId; readonly family: Family; readonly from: Prefix; readonly out: IfName }
  /** Traffic from 127.0.0.0/8 (DNATed 127.0.0.1 publishing, needs route_localnet) leaving through `out`. */
  | { readonly kind: 'masquerade-loopback'; readonly owner: NetworkId; readonly out: IfName };

/**
 * A rule in another firewall's filter chain that lets a network's bridge through where that firewall
 * drops forwarded packets (see planLetThrough). `match` 'in' = packets arriving from the bridge
 * (`-i`), 'out' = packets leaving through it (`-o`). `to` 'accept' ends that firewall's verdict
 * (tsnet's own table still decides: a drop there wins); 'tsnet' jumps to tsnet's own iptables
 * forward chain, which decides every packet of a tsnet bridge (the iptables backend, whose rules
 * live in the same table, where an ACCEPT would skip them).
 */
export interface LetThroughRule {
  readonly kind: 'let-through';
  readonly owner: NetworkId;
  readonly family: Family;
  readonly chain: 'DOCKER-USER' | 'FORWARD';
  readonly match: 'in' | 'out';
  readonly bridge: IfName;
  readonly to: 'accept' | 'tsnet';
}

/** What the host's iptables does with forwarded packets, per family, read from the kernel. */
export interface HostForward {
  readonly family: Family;
  /** The policy of the filter table's FORWARD chain (Docker and ufw set drop). */
  readonly policy: 'accept' | 'drop';
  /** Docker's user chain exists (and is jumped to from FORWARD): the place Docker documents for other software. */
  readonly dockerUser: boolean;
}

/**
 * A masquerade an endpoint owns: DNATed flows to `to` from `from` (127.0.0.0/8 for ports published
 * on 127.0.0.1, or the endpoint's own subnet for hairpin) get the bridge's address as source. Only
 * for endpoints whose bridge is not one of tsnet's networks (a CNI chain after the reference
 * `bridge` plugin): tsnet's networks own these rules for all their endpoints.
 */
export interface EndpointNatRule {
  readonly kind: 'masquerade-endpoint';
  readonly owner: EndpointId;
  readonly family: Family;
  readonly from: Prefix;
  readonly to: IpAddr;
}

/** One published mapping, as the endpoint asked for it. */
export interface DnatRule {
  readonly kind: 'dnat';
  readonly owner: EndpointId;
  /** Not used by today's serializers; kept for per-network features (direct-access filtering). */
  readonly network: NetworkId;
  readonly bridge: IfName;
  readonly family: Family;
  readonly proto: Proto;
  /** undefined = every local address of `family`. */
  readonly hostIp?: IpAddr;
  readonly hostPorts: PortRange;
  readonly to: IpAddr;
  readonly toPorts: PortRange;
}

/**
 * How host ports map to container ports:
 * 'port' 8080→80 · 'range-to-port' 8000-8100→80 · 'range' 8000-8100→8000-8100 (port kept) ·
 * 'shifted' 8000-8100→9000-9100.
 */
export type DnatShape = 'port' | 'range-to-port' | 'range' | 'shifted';

/**
 * The unit of port ownership: a shifted range is one atom per port (that is how nftables stores
 * it), every other rule is one atom. Two atoms CONFLICT when they have the same family, proto,
 * host address (or both "any") and atom shape, their host port ranges overlap, and they are not
 * the same mapping (same ports, target and owner). Atoms of different shapes never conflict:
 * overlapping those is the port reservation layer's business, and the backends then prefer
 * host-address-specific mappings, then single ports, then ranges.
 */
export interface DnatAtom {
  readonly shape: 'port' | 'range-to-port' | 'range';
  readonly owner: EndpointId;
  readonly family: Family;
  readonly proto: Proto;
  readonly hostIp?: IpAddr;
  readonly hostPorts: PortRange;
  readonly to: IpAddr;
  readonly toPorts: PortRange;
}

// ---------------------------------------------------------------------------------------------
// validation

export const DEFAULT_NAME = 'tsnet';
const NAME_RE = /^[a-z][a-z0-9_]{0,11}$/;

export function checkFirewallName(name: string | undefined): string {
  const n = name ?? DEFAULT_NAME;
  if (!NAME_RE.test(n)) throw new TsnetError('INVALID_CONFIG', `firewall name: invalid value ${JSON.stringify(n)}: lowercase letter then up to 11 of [a-z0-9_]`, { details: { field: 'name', value: n } });
  return n;
}

function invalid(field: string, value: unknown, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: invalid value ${JSON.stringify(value) ?? String(value)}: ${why}`, {
    details: { field, value },
  });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkBoolean(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw invalid(field, v, 'must be true or false');
  return v;
}

function checkPort(v: unknown, field: string): Port {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65_535) throw invalid(field, v, 'must be an integer 1-65535');
  return v as Port;
}

function checkRange(v: unknown, field: string): PortRange {
  if (!isObject(v)) throw invalid(field, v, 'must be { start, end }');
  const start = checkPort(v['start'], `${field}.start`);
  const end = checkPort(v['end'], `${field}.end`);
  if (start > end) throw invalid(field, v, `reversed range: start ${start} > end ${end}`);
  return { start, end };
}

/** Checks every field and normalizes; throws INVALID_CONFIG naming the first bad field. */
export function validateNetworkPolicy(raw: NetworkPolicy): NetworkPolicy {
  const p: unknown = raw;
  if (!isObject(p)) throw invalid('network policy', p, 'must be an object');
  const networkId = parseNetworkId(p['networkId'] as string, 'networkId');
  const bridge = parseIfName(p['bridge'] as string, 'bridge');
  const rawSubnets = p['subnets'];
  if (!Array.isArray(rawSubnets)) throw invalid('subnets', rawSubnets, 'must be an array of CIDR prefixes');
  const subnets: Prefix[] = [];
  rawSubnets.forEach((s: unknown, i) => {
    const net = prefixNetwork(parsePrefix(s as string, `subnets[${i}]`));
    if (!subnets.includes(net)) subnets.push(net);
  });
  return {
    networkId,
    bridge,
    subnets,
    masquerade: checkBoolean(p['masquerade'], 'masquerade'),
    internal: checkBoolean(p['internal'], 'internal'),
    icc: checkBoolean(p['icc'], 'icc'),
  };
}

interface IpInfo {
  readonly ip: IpAddr;
  readonly family: Family;
  readonly range: string;
}
/** Parsed addresses of one request, by raw text: requests repeat the same few addresses. */
type IpCache = Map<string, IpInfo>;

function ipInfo(cache: IpCache, raw: unknown, field: string): IpInfo {
  const hit = typeof raw === 'string' ? cache.get(raw) : undefined;
  if (hit) return hit;
  const ip = parseIpAddr(raw as string, field);
  const info: IpInfo = { ip, family: addrFamily(ip), range: ipaddr.parse(ip).range() };
  cache.set(raw as string, info);
  return info;
}

function checkHostIp(cache: IpCache, v: unknown, field: string): IpInfo | undefined {
  if (v === undefined) return undefined;
  const info = ipInfo(cache, v, field);
  if (info.ip === '0.0.0.0' || info.ip === '::') return info; // "every local address" of the family
  if (info.ip === '::1') throw invalid(field, v, 'Linux cannot DNAT IPv6 loopback (::1) to another address; publish on 127.0.0.1 or a host address');
  if (info.range === 'multicast' || info.range === 'broadcast' || info.range === 'unspecified') throw invalid(field, v, `a ${info.range} address cannot be a host address`);
  return info;
}

const BAD_TARGET = new Set(['unspecified', 'broadcast', 'multicast', 'loopback', 'ipv4Mapped']);

function checkContainerIp(cache: IpCache, v: unknown, field: string): IpInfo {
  const info = ipInfo(cache, v, field);
  if (BAD_TARGET.has(info.range) || (info.family === 6 && info.range === 'linkLocal')) throw invalid(field, v, `a ${info.range} address cannot be a DNAT target`);
  return info;
}

const isPort = (v: unknown): v is Port => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65_535;

/** checkRange without building field names unless it fails (hot path). */
function checkRangeAt(v: unknown, field: () => string): PortRange {
  if (isObject(v) && isPort(v['start']) && isPort(v['end']) && v['start'] <= v['end']) return { start: v['start'], end: v['end'] };
  return checkRange(v, field()); // throws the precise error
}

function checkMapping(cache: IpCache, m: unknown, i: number): PortMapping {
  const field = `mappings[${i}]`;
  if (!isObject(m)) throw invalid(field, m, 'must be an object');
  const rawProto = m['proto'];
  const proto = rawProto === 'tcp' || rawProto === 'udp' || rawProto === 'sctp' ? rawProto : parseProto(rawProto as string, `${field}.proto`);
  const hostIpRaw = m['hostIp'];
  const container = checkContainerIp(cache, m['containerIp'], `${field}.containerIp`);
  const host = checkHostIp(cache, hostIpRaw, `${field}.hostIp`);
  if (host && host.family !== container.family) {
    throw invalid(`${field}.hostIp`, hostIpRaw, `address family differs from containerIp ${container.ip}`);
  }
  const hostIp = host === undefined || host.ip === '0.0.0.0' || host.ip === '::' ? undefined : host.ip;
  const hostPort = checkRangeAt(m['hostPort'], () => `${field}.hostPort`);
  const containerPort = checkRangeAt(m['containerPort'], () => `${field}.containerPort`);
  const hostLen = hostPort.end - hostPort.start;
  const ctrLen = containerPort.end - containerPort.start;
  if (ctrLen !== 0 && ctrLen !== hostLen) {
    throw invalid(`${field}.containerPort`, m['containerPort'], `range length ${ctrLen + 1} differs from hostPort range length ${hostLen + 1} (use the same length or a single port)`);
  }
  const containerIp = container.ip;
  return hostIp === undefined ? { proto, hostPort, containerIp, containerPort } : { proto, hostIp, hostPort, containerIp, containerPort };
}

/** A validated request with its plan: what every backend's ensurePorts starts from. */
export interface PreparedPorts {
  readonly ports: EndpointPorts;
  readonly rules: readonly DnatRule[];
  /** The rules' atoms, exact duplicates removed. */
  readonly atoms: readonly DnatAtom[];
  /** The endpoint's own masquerades (only with `foreignBridge`). */
  readonly nat: readonly EndpointNatRule[];
}

/**
 * Checks every field and normalizes; throws INVALID_CONFIG naming the first bad field. Mappings
 * of one request that conflict with each other are rejected; exact duplicates are merged.
 */
export function validateEndpointPorts(raw: EndpointPorts): EndpointPorts {
  return preparePorts(raw).ports;
}

/** validateEndpointPorts + planPorts + dnatAtoms in one pass (hot path: 10,000 mappings). */
export function preparePorts(raw: EndpointPorts): PreparedPorts {
  const p: unknown = raw;
  if (!isObject(p)) throw invalid('endpoint ports', p, 'must be an object');
  const endpointId = parseEndpointId(p['endpointId'] as string, 'endpointId');
  const networkId = parseNetworkId(p['networkId'] as string, 'networkId');
  const bridge = parseIfName(p['bridge'] as string, 'bridge');
  const rawMappings: unknown = p['mappings'];
  if (!Array.isArray(rawMappings)) throw invalid('mappings', rawMappings, 'must be an array');
  const cache: IpCache = new Map();
  const checked: PortMapping[] = [];
  for (let i = 0; i < rawMappings.length; i++) checked.push(checkMapping(cache, rawMappings[i], i));
  const all = planPorts({ endpointId, networkId, bridge, mappings: checked });
  // Conflicts between mappings of the request: sort each group by start, compare with the atom
  // reaching furthest so far. An atom equal to an earlier one is a duplicate (dropped); a
  // mapping whose single atom is a duplicate is an exact duplicate mapping (dropped).
  const atoms: DnatAtom[] = [];
  const from: number[] = []; // atom -> mapping index
  const groups = new Map<string, number[]>();
  for (let j = 0; j < all.length; j++) {
    for (const a of dnatAtoms(all[j] as DnatRule)) {
      const k = atomGroupKey(a);
      const g = groups.get(k);
      if (g) g.push(atoms.length);
      else groups.set(k, [atoms.length]);
      atoms.push(a);
      from.push(j);
    }
  }
  const dupAtom = new Set<number>();
  const dupMapping = new Set<number>();
  for (const g of groups.values()) {
    g.sort((x, y) => (atoms[x] as DnatAtom).hostPorts.start - (atoms[y] as DnatAtom).hostPorts.start || x - y);
    let reach = -1; // the atom reaching furthest so far
    for (const cur of g) {
      const a = atoms[cur] as DnatAtom;
      const r = atoms[reach];
      if (r && a.hostPorts.start <= r.hostPorts.end) {
        const [first, second] = [from[reach] ?? 0, from[cur] ?? 0].sort((x, y) => x - y) as [number, number];
        if (!sameAtom(r, a)) {
          throw invalid(`mappings[${second}].hostPort`, (rawMappings[second] as Record<string, unknown> | undefined)?.['hostPort'], `host ports overlap mappings[${first}]`);
        }
        dupAtom.add(cur);
        if (dnatShape(all[from[cur] ?? 0] as DnatRule) !== 'shifted' && dnatShape(all[from[reach] ?? 0] as DnatRule) !== 'shifted') dupMapping.add(from[cur] ?? 0);
      }
      if (!r || a.hostPorts.end > r.hostPorts.end) reach = cur;
    }
  }
  const mappings = dupMapping.size === 0 ? checked : checked.filter((_, j) => !dupMapping.has(j));
  const foreign = checkForeignBridge(p['foreignBridge']);
  const ports: EndpointPorts = foreign === undefined ? { endpointId, networkId, bridge, mappings } : { endpointId, networkId, bridge, mappings, foreignBridge: foreign };
  const rules = dupMapping.size === 0 ? all : all.filter((_, j) => !dupMapping.has(j));
  return { ports, rules, atoms: dupAtom.size === 0 ? atoms : atoms.filter((_, x) => !dupAtom.has(x)), nat: planEndpointNat(ports) };
}

function checkForeignBridge(v: unknown): EndpointPorts['foreignBridge'] {
  if (v === undefined) return undefined;
  if (!isObject(v) || !Array.isArray(v['subnets'])) throw invalid('foreignBridge', v, 'must be { subnets: [CIDR prefixes] }');
  const subnets: Prefix[] = [];
  (v['subnets'] as unknown[]).forEach((s, i) => {
    const net = prefixNetwork(parsePrefix(s as string, `foreignBridge.subnets[${i}]`));
    if (!subnets.includes(net)) subnets.push(net);
  });
  return { subnets };
}

// ---------------------------------------------------------------------------------------------
// planning

/** The skeleton every backend installs once. */
export function planBase(): BaseRule[] {
  return [{ kind: 'forward-established' }, { kind: 'loopback-guard', family: 4 }, { kind: 'loopback-guard', family: 6 }];
}

/** The rules a (validated) network owns, in evaluation order. */
export function planNetwork(p: NetworkPolicy): NetworkRule[] {
  const owner = p.networkId;
  const bridge = p.bridge;
  const rules: NetworkRule[] = [
    { kind: 'forward-in', owner, bridge, match: 'same-bridge', verdict: p.icc ? 'accept' : 'drop' },
  ];
  if (!p.internal) rules.push({ kind: 'forward-in', owner, bridge, match: 'published', verdict: 'accept' });
  rules.push({ kind: 'forward-in', owner, bridge, match: 'any', verdict: 'drop' });
  rules.push({ kind: 'forward-out', owner, bridge, verdict: p.internal ? 'drop' : 'accept' });
  if (p.internal) return rules;
  if (p.masquerade) {
    for (const from of p.subnets) rules.push({ kind: 'masquerade', owner, family: addrFamily(from), from, notOut: bridge });
  }
  for (const from of p.subnets) rules.push({ kind: 'masquerade-hairpin', owner, family: addrFamily(from), from, out: bridge });
  if (p.subnets.some((s) => addrFamily(s) === 4)) rules.push({ kind: 'masquerade-loopback', owner, out: bridge });
  return rules;
}

/** The DNAT rules a (validated) endpoint owns, one per mapping. */
export function planPorts(p: EndpointPorts): DnatRule[] {
  const owner = p.endpointId;
  const network = p.networkId;
  const bridge = p.bridge;
  return p.mappings.map((m): DnatRule => {
    const family = addrFamily(m.containerIp);
    const { proto, hostPort: hostPorts, containerIp: to, containerPort: toPorts } = m;
    return m.hostIp === undefined
      ? { kind: 'dnat', owner, network, bridge, family, proto, hostPorts, to, toPorts }
      : { kind: 'dnat', owner, network, bridge, family, proto, hostIp: m.hostIp, hostPorts, to, toPorts };
  });
}

const LOOPBACK4 = '127.0.0.0/8' as Prefix;

/**
 * The masquerades an endpoint on a foreign bridge owns, per container address: from 127.0.0.0/8
 * (IPv4: ports published on 127.0.0.1 reach the container with route_localnet; its reply must come
 * back to the host) and from each of its subnets of that family (hairpin: a container reaching its
 * own or a neighbour's published port through a host address must see the reply come from the
 * address it connected to). Only DNATed flows match (conntrack state), like the reference portmap's
 * mark.
 */
export function planEndpointNat(p: EndpointPorts): EndpointNatRule[] {
  if (p.foreignBridge === undefined) return [];
  const out: EndpointNatRule[] = [];
  const seen = new Set<string>();
  for (const m of p.mappings) {
    if (seen.has(m.containerIp)) continue;
    seen.add(m.containerIp);
    const family = addrFamily(m.containerIp);
    const froms = [...(family === 4 ? [LOOPBACK4] : []), ...p.foreignBridge.subnets.filter((s) => addrFamily(s) === family)];
    for (const from of froms) out.push({ kind: 'masquerade-endpoint', owner: p.endpointId, family, from, to: m.containerIp });
  }
  return out;
}

/**
 * The rules a network needs in another firewall's chains (see LetThroughRule), for every family
 * whose FORWARD chain drops by default: in Docker's DOCKER-USER when it exists (Docker's documented
 * place for other software, processed before Docker's own rules and kept by Docker across its
 * restarts), else at the head of FORWARD itself (ufw, or an admin's `iptables -P FORWARD DROP`:
 * ufw's own chains are jumped to from FORWARD and rewritten by every `ufw reload`, ufw's user
 * chains hold what `ufw route` writes and are rewritten from ufw's files, so rules of a third
 * party only last in FORWARD, the way Docker does it on a ufw host). Nothing where nothing drops.
 * With `to` 'tsnet' (the iptables backend), FORWARD needs nothing: tsnet's own jumps head it.
 */
/** How each backend lets its bridges through another firewall's chain (none: it programs nothing). */
export const LET_THROUGH_TO = { nftables: 'accept', iptables: 'tsnet', none: undefined } as const satisfies Record<FirewallBackend, LetThroughRule['to'] | undefined>;

export function planLetThrough(p: Pick<NetworkPolicy, 'networkId' | 'bridge'>, hosts: readonly HostForward[], to: LetThroughRule['to']): LetThroughRule[] {
  const out: LetThroughRule[] = [];
  for (const h of hosts) {
    if (h.policy !== 'drop') continue;
    const chain = h.dockerUser ? 'DOCKER-USER' : 'FORWARD';
    if (to === 'tsnet' && chain === 'FORWARD') continue;
    for (const match of ['in', 'out'] as const) out.push({ kind: 'let-through', owner: p.networkId, family: h.family, chain, match, bridge: p.bridge, to });
  }
  return out;
}

export function dnatShape(r: Pick<DnatRule, 'hostPorts' | 'toPorts'>): DnatShape {
  if (r.hostPorts.start === r.hostPorts.end) return 'port';
  if (r.toPorts.start === r.toPorts.end) return 'range-to-port';
  return r.toPorts.start === r.hostPorts.start ? 'range' : 'shifted';
}

function atom(r: DnatRule, shape: DnatAtom['shape'], hostPorts: PortRange, toPorts: PortRange): DnatAtom {
  return r.hostIp === undefined
    ? { shape, owner: r.owner, family: r.family, proto: r.proto, hostPorts, to: r.to, toPorts }
    : { shape, owner: r.owner, family: r.family, proto: r.proto, hostIp: r.hostIp, hostPorts, to: r.to, toPorts };
}

/** The ownership units of a rule (see DnatAtom). */
export function dnatAtoms(r: DnatRule): DnatAtom[] {
  const shape = dnatShape(r);
  if (shape !== 'shifted') return [atom(r, shape, r.hostPorts, r.toPorts)];
  const out: DnatAtom[] = [];
  for (let p = r.hostPorts.start; p <= r.hostPorts.end; p++) {
    const q = (r.toPorts.start + (p - r.hostPorts.start)) as Port;
    out.push(atom(r, 'port', { start: p as Port, end: p as Port }, { start: q, end: q }));
  }
  return out;
}

/** Atoms in the same group can conflict; atoms in different groups never do. */
export function atomGroupKey(a: DnatAtom): string {
  return `${a.family}|${a.proto}|${a.hostIp ?? '*'}|${a.shape}`;
}

export function sameAtom(a: DnatAtom, b: DnatAtom): boolean {
  return (
    atomGroupKey(a) === atomGroupKey(b) &&
    a.hostPorts.start === b.hostPorts.start &&
    a.hostPorts.end === b.hostPorts.end &&
    a.to === b.to &&
    a.toPorts.start === b.toPorts.start &&
    a.toPorts.end === b.toPorts.end &&
    a.owner === b.owner
  );
}

export function atomsConflict(a: DnatAtom, b: DnatAtom): boolean {
  return (
    atomGroupKey(a) === atomGroupKey(b) &&
    a.hostPorts.start <= b.hostPorts.end &&
    b.hostPorts.start <= a.hostPorts.end &&
    !sameAtom(a, b)
  );
}

export interface AtomDiff {
  /** Wanted atoms not in the kernel yet. */
  readonly missing: DnatAtom[];
  /** Wanted atoms already there (same owner and target). */
  readonly present: DnatAtom[];
  /** Wanted atoms that collide with an existing one. */
  readonly conflicts: { readonly wanted: DnatAtom; readonly existing: DnatAtom }[];
}

/** Existing atoms indexed for diffs: single ports by (group, port), ranges by group. */
export interface AtomIndex {
  diff(wanted: readonly DnatAtom[]): AtomDiff;
}

export function indexAtoms(existing: readonly DnatAtom[]): AtomIndex {
  const buckets = new Map<string, DnatAtom[]>();
  const keyOf = (a: DnatAtom): string => (a.shape === 'port' ? `${atomGroupKey(a)}|${a.hostPorts.start}` : atomGroupKey(a));
  for (const e of existing) {
    const k = keyOf(e);
    const b = buckets.get(k);
    if (b) b.push(e);
    else buckets.set(k, [e]);
  }
  return {
    diff(wanted) {
      const diff: AtomDiff = { missing: [], present: [], conflicts: [] };
      for (const w of wanted) {
        const bucket = buckets.get(keyOf(w)) ?? [];
        const clash = bucket.find((e) => atomsConflict(w, e));
        if (clash) diff.conflicts.push({ wanted: w, existing: clash });
        else if (bucket.some((e) => sameAtom(w, e))) diff.present.push(w);
        else diff.missing.push(w);
      }
      return diff;
    },
  };
}

/** Compares wanted atoms with existing ones. */
export function diffAtoms(existing: readonly DnatAtom[], wanted: readonly DnatAtom[]): AtomDiff {
  return indexAtoms(existing).diff(wanted);
}

export function describeAtom(a: DnatAtom): string {
  const host = a.hostIp === undefined ? '*' : a.family === 6 ? `[${a.hostIp}]` : a.hostIp;
  const to = a.family === 6 ? `[${a.to}]` : a.to;
  return `${a.proto} ${host}:${portText(a.hostPorts)} -> ${to}:${portText(a.toPorts)} (endpoint ${a.owner})`;
}

export function portText(r: PortRange): string {
  return r.start === r.end ? String(r.start) : `${r.start}-${r.end}`;
}

export function conflictError(c: { readonly wanted: DnatAtom; readonly existing: DnatAtom }): TsnetError {
  return new TsnetError('ALREADY_EXISTS', `port mapping ${describeAtom(c.wanted)} conflicts with published ${describeAtom(c.existing)}`, {
    details: { wanted: c.wanted, existing: c.existing },
  });
}
