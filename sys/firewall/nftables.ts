/**
 * The nftables backend (default). One `inet` table owned by tsnet (default name "tsnet") holds
 * everything, for IPv4 and IPv6:
 *
 * - Published ports are ELEMENTS of 12 maps, `{ports,rangeto,range}{4,6}_{any,addr}`: key
 *   `[host address .] proto . host port(s)`, data the DNAT target, `comment` = the endpoint id
 *   (the owner, read back by removePorts/list). A port range is one interval element; a packet is
 *   matched by one O(1) lookup per map. Adding or removing an endpoint's ports adds or removes
 *   elements only (one `create element`/`delete element` transaction): no per-port chains, no
 *   ruleset rewrite, and the cost does not grow with the number of ports already published.
 *   · ports*   (hash)     single port → single port; also shifted ranges, one element per port,
 *                         because nft 1.0.6 has no syntax for a NAT port offset (iptables has);
 *   · rangeto* (interval) N:1, data `addr . port`;
 *   · range*   (interval) same range, data `addr` only, so the port is kept. (An interval DATA
 *                         `addr . lo-hi` would also do, but the kernel rejects it for IPv6.)
 * - A network owns four chains `nw-<id>-{fwd-in,fwd-out,nat-in,nat-out}`, reached in O(1) through
 *   verdict maps keyed by bridge name (fwd_in, fwd_out, nat_in) or subnet (nat_out4/6). The forward
 *   chain consults the SOURCE bridge first (fwd_out: an internal network drops whatever leaves its
 *   bridge, DNATed or not), then the destination bridge (fwd_in: icc, published ports, isolation);
 *   egress is accepted by the chain's policy.
 * - Endpoints on a bridge that is not a tsnet network (tsnet-portmap after the reference bridge
 *   plugin) own elements of the sets masq4/masq6 (`source prefix . container address`, comment =
 *   the endpoint): DNATed flows from 127.0.0.0/8 or from the container's subnet to it are
 *   masqueraded, as tsnet's networks do for their own endpoints.
 * - Where another firewall's iptables FORWARD chain drops (Docker, ufw), host-chains.ts writes the
 *   network's let-through rules there (`iptables-restore`, only then).
 * - The skeleton (maps, base chains and their few rules) is created with `add` (idempotent) and
 *   the base chains are flushed and refilled in the same atomic transaction, so concurrent
 *   creators can never duplicate a rule. ensurePorts does not touch it on its fast path (that
 *   would make nft fetch every element); it creates it only when the table is missing.
 *
 * Text (`nft -f -`), not JSON, is what we write: 10,000 elements apply in ~140 ms as text and
 * ~177 ms as JSON on the reference machine. Reads use `nft -j list`.
 */
import * as z from 'zod/mini'; // tree-shakable: this module is in the CNI plugin bundle
import { isCode, TsnetError, wrap, type ErrorCode } from '../../core/errors.js';
import { nullLogger, type Logger } from '../../core/log.js';
import {
  netnsLabel,
  parseIpAddr,
  parsePrefix,
  prefixesOverlap,
  type EndpointId,
  type Family,
  type IfName,
  type IpAddr,
  type NetworkId,
  type Port,
  type Prefix,
  type Proto,
} from '../../core/net.js';
import { execDetails, inNetns, run } from '../exec.js';
import type {
  EndpointPorts,
  Firewall,
  FirewallCallOptions,
  FirewallDeps,
  FirewallExec,
  FirewallListing,
  NetworkPolicy,
} from './api.js';
import { createFirewalld } from './firewalld.js';
import { createHostChains } from './host-chains.js';
import { iptNames } from './iptables.js';
import {
  checkFirewallName,
  conflictError,
  diffAtoms,
  planBase,
  planNetwork,
  portText,
  preparePorts,
  validateNetworkPolicy,
  type BaseRule,
  type DnatAtom,
  type EndpointNatRule,
  type PreparedPorts,
  type NetworkRule,
} from './plan.js';

const MAX_ATTEMPTS = 5;

// ---------------------------------------------------------------------------------------------
// names

type PortMapKind = 'ports' | 'rangeto' | 'range';
const PORT_MAP_KINDS = ['ports', 'rangeto', 'range'] as const satisfies readonly PortMapKind[];
const SCOPES = ['addr', 'any'] as const;
type Scope = (typeof SCOPES)[number];

export type DispatchMap = 'fwd_in' | 'fwd_out' | 'nat_in' | 'nat_out4' | 'nat_out6';
export const DISPATCH_MAPS = ['fwd_in', 'fwd_out', 'nat_in', 'nat_out4', 'nat_out6'] as const satisfies readonly DispatchMap[];

type NetChain = 'fwd-in' | 'fwd-out' | 'nat-in' | 'nat-out';
const NET_CHAINS = ['fwd-in', 'fwd-out', 'nat-in', 'nat-out'] as const satisfies readonly NetChain[];

export function networkChain(id: NetworkId, which: NetChain): string {
  return `nw-${id}-${which}`;
}

/** The network id of a chain `nw-<id>-<which>`, or undefined. */
export function networkOfChain(chain: string): NetworkId | undefined {
  for (const which of NET_CHAINS) {
    const suffix = `-${which}`;
    if (chain.startsWith('nw-') && chain.endsWith(suffix) && chain.length > 3 + suffix.length) {
      return chain.slice(3, -suffix.length) as NetworkId;
    }
  }
  return undefined;
}

function portMapName(kind: PortMapKind, family: Family, scope: Scope): string {
  return `${kind}${family}_${scope}`;
}

function atomMap(a: DnatAtom): string {
  const kind: PortMapKind = a.shape === 'port' ? 'ports' : a.shape === 'range-to-port' ? 'rangeto' : 'range';
  return portMapName(kind, a.family, a.hostIp === undefined ? 'any' : 'addr');
}

function parsePortMapName(name: string): { kind: PortMapKind; family: Family; scope: Scope } | undefined {
  const m = /^(ports|rangeto|range)([46])_(addr|any)$/.exec(name);
  if (!m) return undefined;
  return { kind: m[1] as PortMapKind, family: Number(m[2]) as Family, scope: m[3] as Scope };
}

// ---------------------------------------------------------------------------------------------
// serialization (pure; golden-tested)

const ADDR_TYPE = { 4: 'ipv4_addr', 6: 'ipv6_addr' } as const satisfies Record<Family, string>;
const NFPROTO = { 4: 'ipv4', 6: 'ipv6' } as const satisfies Record<Family, string>;
const IPKW = { 4: 'ip', 6: 'ip6' } as const satisfies Record<Family, string>;

function portMapDecl(table: string, kind: PortMapKind, family: Family, scope: Scope): string {
  const key = `${scope === 'addr' ? `${ADDR_TYPE[family]} . ` : ''}inet_proto . inet_service`;
  const data = kind === 'range' ? ADDR_TYPE[family] : `${ADDR_TYPE[family]} . inet_service`;
  const flags = kind === 'ports' ? '' : ' flags interval ;';
  return `add map inet ${table} ${portMapName(kind, family, scope)} { type ${key} : ${data} ;${flags} }`;
}

function baseRuleLines(table: string, r: BaseRule): string[] {
  switch (r.kind) {
    case 'forward-established':
      return [`add rule inet ${table} forward ct state established,related accept`];
    case 'loopback-guard':
      return [`add rule inet ${table} guard iifname != "lo" ${IPKW[r.family]} daddr ${r.family === 4 ? '127.0.0.0/8' : '::1'} drop`];
  }
}

const BASE_CHAINS: readonly (readonly [string, string])[] = [
  ['guard', 'type filter hook prerouting priority raw ; policy accept ;'],
  ['prerouting', 'type nat hook prerouting priority dstnat ; policy accept ;'],
  ['output', 'type nat hook output priority -100 ; policy accept ;'],
  ['postrouting', 'type nat hook postrouting priority srcnat ; policy accept ;'],
  ['forward', 'type filter hook forward priority filter ; policy accept ;'],
  ['ports', ''],
];

/** The skeleton: table, maps, base chains; base chains flushed and refilled (atomic, idempotent). */
export function nftSkeleton(table: string): string[] {
  const lines = [`add table inet ${table}`];
  for (const family of [4, 6] as const) {
    for (const kind of PORT_MAP_KINDS) for (const scope of SCOPES) lines.push(portMapDecl(table, kind, family, scope));
  }
  lines.push(`add map inet ${table} fwd_in { type ifname : verdict ; }`);
  lines.push(`add map inet ${table} fwd_out { type ifname : verdict ; }`);
  lines.push(`add map inet ${table} nat_in { type ifname : verdict ; }`);
  lines.push(`add map inet ${table} nat_out4 { type ipv4_addr : verdict ; flags interval ; }`);
  lines.push(`add map inet ${table} nat_out6 { type ipv6_addr : verdict ; flags interval ; }`);
  for (const family of [4, 6] as const) lines.push(`add set inet ${table} masq${family} { type ${ADDR_TYPE[family]} . ${ADDR_TYPE[family]} ; flags interval ; }`);
  for (const [name, spec] of BASE_CHAINS) lines.push(spec ? `add chain inet ${table} ${name} { ${spec} }` : `add chain inet ${table} ${name}`);
  for (const [name] of BASE_CHAINS) lines.push(`flush chain inet ${table} ${name}`);
  const base = planBase();
  for (const r of base.filter((x) => x.kind === 'loopback-guard')) lines.push(...baseRuleLines(table, r));
  lines.push(`add rule inet ${table} prerouting fib daddr type local jump ports`);
  // Not ::1: Linux cannot route a packet from ::1 out of lo (no route_localnet for IPv6), so a
  // DNAT'd ::1 connection would hang instead of being refused.
  lines.push(`add rule inet ${table} output ip6 daddr ::1 return`);
  lines.push(`add rule inet ${table} output fib daddr type local jump ports`);
  // Lookup order: host-address-specific before "any", single ports before ranges.
  for (const family of [4, 6] as const) {
    for (const scope of SCOPES) {
      for (const kind of PORT_MAP_KINDS) {
        const key = `${scope === 'addr' ? `${IPKW[family]} daddr . ` : ''}meta l4proto . th dport`;
        lines.push(`add rule inet ${table} ports meta nfproto ${NFPROTO[family]} meta l4proto { tcp, udp, sctp } dnat ${IPKW[family]} to ${key} map @${portMapName(kind, family, scope)}`);
      }
    }
  }
  lines.push(`add rule inet ${table} postrouting oifname vmap @nat_in`);
  lines.push(`add rule inet ${table} postrouting ip saddr vmap @nat_out4`);
  lines.push(`add rule inet ${table} postrouting ip6 saddr vmap @nat_out6`);
  for (const family of [4, 6] as const) lines.push(`add rule inet ${table} postrouting ct status dnat ${IPKW[family]} saddr . ${IPKW[family]} daddr @masq${family} masquerade`);
  for (const r of base.filter((x) => x.kind === 'forward-established')) lines.push(...baseRuleLines(table, r));
  lines.push(`add rule inet ${table} forward iifname vmap @fwd_out`);
  lines.push(`add rule inet ${table} forward oifname vmap @fwd_in`);
  return lines;
}

/** A verdict-map element that dispatches to a network's chain. */
export interface DispatchElement {
  readonly map: DispatchMap;
  /** Interface name or subnet prefix. */
  readonly key: string;
  readonly chain: string;
  readonly owner: NetworkId;
}

function q(ifname: string): string {
  return `"${ifname}"`;
}

function ruleChain(r: NetworkRule): NetChain {
  switch (r.kind) {
    case 'forward-in':
      return 'fwd-in';
    case 'forward-out':
      return 'fwd-out';
    case 'masquerade':
      return 'nat-out';
    case 'masquerade-hairpin':
    case 'masquerade-loopback':
      return 'nat-in';
  }
}

/** The rule's text in its chain; undefined when the chain's default is the verdict already. */
function ruleBody(r: NetworkRule): string | undefined {
  switch (r.kind) {
    case 'forward-in': {
      const match = r.match === 'same-bridge' ? `iifname ${q(r.bridge)} ` : r.match === 'published' ? 'ct status dnat ' : '';
      return `${match}${r.verdict}`;
    }
    case 'forward-out':
      // Consulted before the destination's fwd-in: an accept here would skip other networks'
      // isolation, so egress is left to the forward chain's policy (accept).
      return r.verdict === 'drop' ? `oifname != ${q(r.bridge)} drop` : undefined;
    case 'masquerade':
      return `${IPKW[r.family]} saddr ${r.from} oifname != ${q(r.notOut)} masquerade`;
    case 'masquerade-hairpin':
      return `${IPKW[r.family]} saddr ${r.from} ct status dnat masquerade`;
    case 'masquerade-loopback':
      return 'ip saddr 127.0.0.0/8 masquerade';
  }
}

/** The dispatch elements a network's rules need. */
export function dispatchFor(rules: readonly NetworkRule[]): DispatchElement[] {
  const out: DispatchElement[] = [];
  const add = (e: DispatchElement): void => {
    if (!out.some((x) => x.map === e.map && x.key === e.key)) out.push(e);
  };
  for (const r of rules) {
    const chain = networkChain(r.owner, ruleChain(r));
    switch (r.kind) {
      case 'forward-in':
        add({ map: 'fwd_in', key: r.bridge, chain, owner: r.owner });
        break;
      case 'forward-out':
        add({ map: 'fwd_out', key: r.bridge, chain, owner: r.owner });
        break;
      case 'masquerade':
        add({ map: r.family === 4 ? 'nat_out4' : 'nat_out6', key: r.from, chain, owner: r.owner });
        break;
      case 'masquerade-hairpin':
      case 'masquerade-loopback':
        add({ map: 'nat_in', key: r.out, chain, owner: r.owner });
        break;
    }
  }
  return out;
}

function dispatchKeyText(e: Pick<DispatchElement, 'map' | 'key'>): string {
  return e.map === 'nat_out4' || e.map === 'nat_out6' ? e.key : q(e.key);
}

/**
 * One transaction that (re)creates a network: skeleton, the network's four chains flushed and
 * refilled, stale dispatch elements deleted, wanted ones added.
 */
export function nftNetworkScript(table: string, id: NetworkId, rules: readonly NetworkRule[], stale: readonly DispatchElement[]): string {
  const [addTable, ...skeleton] = nftSkeleton(table);
  // nft 1.0.6 quirk: an element of an interval verdict map created in the same batch cannot jump to
  // a chain created AFTER that map (ENOENT), so the network's chains come right after the table.
  const lines = [addTable ?? `add table inet ${table}`];
  for (const which of NET_CHAINS) lines.push(`add chain inet ${table} ${networkChain(id, which)}`);
  lines.push(...skeleton);
  for (const which of NET_CHAINS) lines.push(`flush chain inet ${table} ${networkChain(id, which)}`);
  for (const r of rules) {
    const body = ruleBody(r);
    if (body !== undefined) lines.push(`add rule inet ${table} ${networkChain(id, ruleChain(r))} ${body}`);
  }
  for (const e of stale) lines.push(`delete element inet ${table} ${e.map} { ${dispatchKeyText(e)} }`);
  for (const e of dispatchFor(rules)) lines.push(`add element inet ${table} ${e.map} { ${dispatchKeyText(e)} : jump ${e.chain} }`);
  return `${lines.join('\n')}\n`;
}

/** One transaction that removes a network: its dispatch elements, then its chains. */
export function nftRemoveNetworkScript(table: string, id: NetworkId, mine: readonly DispatchElement[]): string {
  const lines: string[] = [];
  for (const e of mine) lines.push(`delete element inet ${table} ${e.map} { ${dispatchKeyText(e)} }`);
  // add+flush+delete: idempotent even if a chain is already gone
  for (const which of NET_CHAINS) {
    const c = networkChain(id, which);
    lines.push(`add chain inet ${table} ${c}`, `flush chain inet ${table} ${c}`, `delete chain inet ${table} ${c}`);
  }
  return `${lines.join('\n')}\n`;
}

function atomKey(a: DnatAtom): string {
  return `${a.hostIp === undefined ? '' : `${a.hostIp} . `}${a.proto} . ${portText(a.hostPorts)}`;
}

function atomData(a: DnatAtom): string {
  return a.shape === 'range' ? a.to : `${a.to} . ${a.toPorts.start}`;
}

/** Element lines for atoms (no duplicates: see preparePorts), grouped per map (one statement per map). */
export function nftElementsScript(table: string, verb: 'create' | 'add', atoms: readonly DnatAtom[]): string {
  const byMap = new Map<string, string[]>();
  for (const a of atoms) {
    const map = atomMap(a);
    const el = `${atomKey(a)} comment "${a.owner}" : ${atomData(a)}`;
    const list = byMap.get(map);
    if (list) list.push(el);
    else byMap.set(map, [el]);
  }
  let out = '';
  for (const [map, els] of byMap) out += `${verb} element inet ${table} ${map} { ${els.join(', ')} }\n`;
  return out;
}

function natKey(r: EndpointNatRule): string {
  return `${r.from} . ${r.to}`;
}

/** The endpoint's masquerade elements (`add`: idempotent), one statement per set. */
export function nftNatElementsScript(table: string, rules: readonly EndpointNatRule[], verb: 'add' | 'delete'): string {
  let out = '';
  for (const family of [4, 6] as const) {
    const els = rules.filter((r) => r.family === family).map((r) => (verb === 'add' ? `${natKey(r)} comment "${r.owner}"` : natKey(r)));
    if (els.length > 0) out += `${verb} element inet ${table} masq${family} { ${els.join(', ')} }\n`;
  }
  return out;
}

/** Deletes the given atoms' elements (keys only), grouped per map. */
export function nftDeleteElementsScript(table: string, atoms: readonly DnatAtom[]): string {
  const byMap = new Map<string, string[]>();
  for (const a of atoms) {
    const map = atomMap(a);
    const list = byMap.get(map);
    if (list) list.push(atomKey(a));
    else byMap.set(map, [atomKey(a)]);
  }
  return [...byMap].map(([map, keys]) => `delete element inet ${table} ${map} { ${keys.join(', ')} }\n`).join('');
}

/** The endpoint's planned elements from what it published; undefined if that no longer parses. */
function knownPorts(published: EndpointPorts): PreparedPorts | undefined {
  try {
    return preparePorts(published);
  } catch {
    return undefined;
  }
}

/** `get element` lines for the given atoms' and masquerade rules' keys (removePorts' owner check). */
export function nftGetElementsScript(table: string, atoms: readonly DnatAtom[], nat: readonly EndpointNatRule[]): string {
  return (nftDeleteElementsScript(table, atoms) + nftNatElementsScript(table, nat, 'delete')).replaceAll(/^delete element /gm, 'get element ');
}

/**
 * Whether `get element` printed exactly `count` elements, each with the comment `owner`: the keys
 * asked for are all there and all the endpoint's.
 */
export function ownsAllElements(listing: string, owner: string, count: number): boolean {
  const comments = [...listing.matchAll(/\bcomment "([^"]*)"/g)].map((m) => m[1]);
  return comments.length === count && comments.every((c) => c === owner);
}

export function nftRemoveAllScript(table: string): string {
  return `add table inet ${table}\ndelete table inet ${table}\n`;
}

// ---------------------------------------------------------------------------------------------
// parsing `nft -j list ...` (external input: only the fields we use)

// The outer structure is checked with zod; map elements (up to tens of thousands) are decoded
// by the small hand-written guards below: a zod union per element costs ~50 us, 10x the rest.
const MapObject = z.object({
  family: z.string(),
  table: z.string(),
  name: z.string(),
  elem: z.optional(z.array(z.unknown())),
});
const ChainObject = z.object({ family: z.string(), table: z.string(), name: z.string() });
export const NftListSchema = z.object({ nftables: z.array(z.record(z.string(), z.unknown())) });

/** A scalar, a range or a prefix: one part of a (possibly concatenated) nft value. */
type NftPart = string | number | { readonly range: readonly [unknown, unknown] } | { readonly prefix: { readonly addr: string; readonly len: number } };

/** What tsnet's table holds, as far as ownership goes. */
export interface NftState {
  readonly exists: boolean;
  readonly chains: readonly string[];
  readonly dispatch: readonly DispatchElement[];
  readonly ports: readonly DnatAtom[];
  /** Endpoints' own masquerades (sets masq4/masq6). */
  readonly nat: readonly EndpointNatRule[];
}

const PROTO_NUM: Readonly<Record<number, Proto>> = { 6: 'tcp', 17: 'udp', 132: 'sctp' };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function asPart(v: unknown): NftPart | undefined {
  if (typeof v === 'string' || typeof v === 'number') return v;
  if (!isRecord(v)) return undefined;
  const r = v['range'];
  if (Array.isArray(r) && r.length === 2) return { range: [r[0], r[1]] };
  const p = v['prefix'];
  if (isRecord(p) && typeof p['addr'] === 'string' && typeof p['len'] === 'number') return { prefix: { addr: p['addr'], len: p['len'] } };
  return undefined;
}

/** The parts of a value (`{concat: [...]}` or a single part); undefined if it is neither. */
function flat(v: unknown): NftPart[] | undefined {
  if (isRecord(v) && Array.isArray(v['concat'])) {
    const parts = v['concat'].map(asPart);
    return parts.every((x) => x !== undefined) ? (parts as NftPart[]) : undefined;
  }
  const one = asPart(v);
  return one === undefined ? undefined : [one];
}

/** An element key: `{elem: {val, comment}}` when it has a comment, else the bare value. */
function decodeKey(k: unknown): { readonly val: unknown; readonly comment?: string } {
  if (isRecord(k) && isRecord(k['elem'])) {
    const e = k['elem'];
    return typeof e['comment'] === 'string' ? { val: e['val'], comment: e['comment'] } : { val: e['val'] };
  }
  return { val: k };
}

function partText(p: NftPart): string {
  if (typeof p === 'string' || typeof p === 'number') return String(p);
  if ('range' in p) return `${String(p.range[0])}-${String(p.range[1])}`;
  return `${p.prefix.addr}/${p.prefix.len}`;
}

function partPorts(p: NftPart | undefined): { start: Port; end: Port } {
  if (typeof p === 'number') return { start: p as Port, end: p as Port };
  if (typeof p === 'object' && 'range' in p) return { start: Number(p.range[0]) as Port, end: Number(p.range[1]) as Port };
  if (typeof p === 'string' && /^\d+$/.test(p)) return { start: Number(p) as Port, end: Number(p) as Port };
  throw new TsnetError('INTERNAL', `nft: unexpected port expression ${JSON.stringify(p)}`);
}

function partProto(p: NftPart | undefined): Proto {
  if (p === 'tcp' || p === 'udp' || p === 'sctp') return p;
  if (typeof p === 'number' && PROTO_NUM[p]) return PROTO_NUM[p];
  throw new TsnetError('INTERNAL', `nft: unexpected protocol ${JSON.stringify(p)}`);
}

function partAddr(p: NftPart | undefined, cache: Map<string, IpAddr>): IpAddr {
  if (typeof p !== 'string') throw new TsnetError('INTERNAL', `nft: unexpected address ${JSON.stringify(p)}`);
  let ip = cache.get(p);
  if (ip === undefined) {
    ip = parseIpAddr(p, 'nft element');
    cache.set(p, ip);
  }
  return ip;
}

function elementToAtom(mapName: string, key: unknown, data: unknown, cache: Map<string, IpAddr>): DnatAtom | undefined {
  const meta = parsePortMapName(mapName);
  if (!meta) return undefined;
  const k = decodeKey(key);
  if (k.comment === undefined) return undefined; // not ours: every tsnet element has an owner
  const parts = flat(k.val);
  const dparts = flat(data);
  if (!parts || !dparts) return undefined;
  const hostIp = meta.scope === 'addr' ? partAddr(parts.shift(), cache) : undefined;
  const proto = partProto(parts[0]);
  const hostPorts = partPorts(parts[1]);
  const to = partAddr(dparts[0], cache);
  const toPorts = meta.kind === 'range' ? hostPorts : partPorts(dparts[1]);
  const shape = meta.kind === 'ports' ? 'port' : meta.kind === 'rangeto' ? 'range-to-port' : 'range';
  const owner = k.comment as EndpointId;
  return hostIp === undefined
    ? { shape, owner, family: meta.family, proto, hostPorts, to, toPorts }
    : { shape, owner, family: meta.family, proto, hostIp, hostPorts, to, toPorts };
}

function elementToDispatch(mapName: DispatchMap, key: unknown, data: unknown): DispatchElement | undefined {
  const jump = isRecord(data) && isRecord(data['jump']) ? data['jump']['target'] : undefined;
  if (typeof jump !== 'string') return undefined;
  const owner = networkOfChain(jump);
  if (owner === undefined) return undefined;
  const parts = flat(decodeKey(key).val);
  if (parts?.length !== 1 || parts[0] === undefined) return undefined;
  let text = partText(parts[0]);
  if (mapName === 'nat_out4' || mapName === 'nat_out6') {
    text = parsePrefix(text.includes('/') ? text : `${text}/${mapName === 'nat_out4' ? 32 : 128}`, 'nft element');
  }
  return { map: mapName, key: text, chain: jump, owner };
}

/** Parses the JSON of `nft -j list table|map ...` into tsnet's ownership view. */
export function parseNftState(json: string, table: string): NftState {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw new TsnetError('INTERNAL', `nft: unparsable JSON output: ${(err as Error).message}`, { cause: err });
  }
  const r = NftListSchema.safeParse(raw);
  if (!r.success) throw new TsnetError('INTERNAL', `nft: unexpected JSON output: ${z.prettifyError(r.error)}`);
  const chains: string[] = [];
  const dispatch: DispatchElement[] = [];
  const ports: DnatAtom[] = [];
  const nat: EndpointNatRule[] = [];
  const cache = new Map<string, IpAddr>();
  for (const item of r.data.nftables) {
    if ('set' in item) {
      const m = MapObject.safeParse(item['set']);
      const family = m.success ? ({ masq4: 4, masq6: 6 } as const)[m.data.name as 'masq4' | 'masq6'] : undefined;
      if (!m.success || m.data.family !== 'inet' || m.data.table !== table || family === undefined) continue;
      for (const el of m.data.elem ?? []) {
        const k = decodeKey(el);
        const parts = flat(k.val);
        if (k.comment === undefined || parts?.length !== 2 || parts[0] === undefined) continue;
        const from = partText(parts[0]);
        nat.push({
          kind: 'masquerade-endpoint',
          owner: k.comment as EndpointId,
          family,
          from: parsePrefix(from.includes('/') ? from : `${from}/${family === 4 ? 32 : 128}`, 'nft element'),
          to: partAddr(parts[1], cache),
        });
      }
      continue;
    }
    if ('chain' in item) {
      const c = ChainObject.safeParse(item['chain']);
      if (c.success && c.data.family === 'inet' && c.data.table === table) chains.push(c.data.name);
      continue;
    }
    if (!('map' in item)) continue;
    const m = MapObject.safeParse(item['map']);
    if (!m.success || m.data.family !== 'inet' || m.data.table !== table) continue;
    const name = m.data.name;
    const isDispatch = (DISPATCH_MAPS as readonly string[]).includes(name);
    for (const el of m.data.elem ?? []) {
      if (!Array.isArray(el) || el.length !== 2) continue; // maps list [key, data] pairs
      const [key, data] = el as [unknown, unknown];
      if (isDispatch) {
        const e = elementToDispatch(name as DispatchMap, key, data);
        if (e) dispatch.push(e);
      } else {
        const a = elementToAtom(name, key, data, cache);
        if (a) ports.push(a);
      }
    }
  }
  return { exists: true, chains, dispatch, ports, nat };
}

// ---------------------------------------------------------------------------------------------
// errors: the one place nft's messages become codes

const NFT_ERRORS: readonly (readonly [RegExp, ErrorCode])[] = [
  [/File exists/i, 'ALREADY_EXISTS'],
  [/No such file or directory|does not exist/i, 'NOT_FOUND'],
  [/Operation not permitted|Permission denied|Protocol not supported|Address family not supported|not supported/i, 'UNAVAILABLE'],
  [/Cannot allocate memory|No space left|Too many|Argument list too long/i, 'EXHAUSTED'],
];

export function classifyNftError(stderr: string): ErrorCode {
  for (const [re, code] of NFT_ERRORS) if (re.test(stderr)) return code;
  return 'INTERNAL';
}

function mapNftError(err: unknown): TsnetError {
  const d = execDetails(err);
  if (!d || !(err instanceof TsnetError) || err.code !== 'INTERNAL') return err instanceof TsnetError ? err : wrap('nft', err);
  const lines = d.stderr.split('\n').filter((l) => /Error:/.test(l));
  const msg = lines.slice(0, 3).join('; ') || d.stderr.trim().split('\n').slice(-1)[0] || err.message;
  return new TsnetError(classifyNftError(d.stderr), `nft: ${msg}`, { cause: err, details: d });
}

// ---------------------------------------------------------------------------------------------
// the backend

export function createNftablesFirewall(deps: FirewallDeps): Firewall {
  const table = checkFirewallName(deps.name);
  const exec: FirewallExec = deps.exec ?? run;
  const log: Logger = (deps.log ?? nullLogger).child({ component: 'firewall', backend: 'nftables', netns: netnsLabel(deps.netns) });

  const nft = async (args: readonly string[], input: string | undefined, opts: FirewallCallOptions): Promise<string> => {
    const argv = inNetns(deps.netns, ['nft', ...args]);
    const t0 = performance.now();
    try {
      const r = await exec(argv, { ...(input === undefined ? {} : { input }), ...(opts.signal ? { signal: opts.signal } : {}) });
      return r.stdout;
    } catch (err) {
      throw mapNftError(err);
    } finally {
      log.debug('exec', { argv: argv.join(' '), ms: Math.round((performance.now() - t0) * 10) / 10, bytes: input?.length ?? 0 });
    }
  };
  const apply = (script: string, opts: FirewallCallOptions): Promise<string> => nft(['-f', '-'], script, opts);
  const host = createHostChains({ netns: deps.netns, names: iptNames(table), exec, log });
  const firewalld = createFirewalld({ netns: deps.netns, name: table, exec, log, ...(deps.systemBus !== undefined ? { systemBus: deps.systemBus } : {}) });

  const readTable = async (opts: FirewallCallOptions): Promise<NftState> => {
    try {
      return parseNftState(await nft(['-j', 'list', 'table', 'inet', table], undefined, opts), table);
    } catch (err) {
      if (isCode(err, 'NOT_FOUND')) return { exists: false, chains: [], dispatch: [], ports: [], nat: [] };
      throw err;
    }
  };

  /**
   * removePorts' fast path: the endpoint's known keys read back (`get element`, O(1) each) and
   * deleted if every one is there and the endpoint's; false (nothing done) otherwise.
   */
  const removeKnown = async (id: EndpointId, known: PreparedPorts, opts: FirewallCallOptions): Promise<boolean> => {
    const count = known.atoms.length + known.nat.length;
    if (count === 0) return false;
    const owned = await nft(['-f', '-'], nftGetElementsScript(table, known.atoms, known.nat), opts).then((out) => ownsAllElements(out, id, count), () => false);
    if (!owned) return false;
    try {
      await apply(nftDeleteElementsScript(table, known.atoms) + nftNatElementsScript(table, known.nat, 'delete'), opts);
    } catch (err) {
      if (isCode(err, 'NOT_FOUND')) return false; // removed concurrently: the search by owner decides
      throw wrap(`remove ports ${id}`, err);
    }
    log.info('ports removed', { endpoint: id, elements: count });
    return true;
  };

  /** The dispatch maps only: cheap however many ports are published (nft filters by set). */
  const readDispatch = async (opts: FirewallCallOptions): Promise<{ exists: boolean; dispatch: DispatchElement[] }> => {
    const results = await Promise.all(
      DISPATCH_MAPS.map(async (m) => {
        try {
          return parseNftState(await nft(['-j', 'list', 'map', 'inet', table, m], undefined, opts), table);
        } catch (err) {
          if (isCode(err, 'NOT_FOUND')) return undefined;
          throw err;
        }
      }),
    );
    return { exists: results.some((r) => r !== undefined), dispatch: results.flatMap((r) => (r ? [...r.dispatch] : [])) };
  };

  return {
    backend: 'nftables',

    async ensureNetwork(p: NetworkPolicy, opts = {}) {
      const v = validateNetworkPolicy(p);
      const rules = planNetwork(v);
      const wanted = dispatchFor(rules);
      for (let attempt = 1; ; attempt++) {
        const { dispatch } = await readDispatch(opts);
        for (const w of wanted) {
          const clash = dispatch.find(
            (e) =>
              e.owner !== v.networkId &&
              e.map === w.map &&
              (w.map === 'nat_out4' || w.map === 'nat_out6' ? prefixesOverlap(e.key as Prefix, w.key as Prefix) : e.key === w.key),
          );
          if (clash) {
            const what = w.map.startsWith('nat_out') ? `subnet ${w.key} overlaps ${clash.key} of` : `bridge ${w.key} is used by`;
            throw new TsnetError('ALREADY_EXISTS', `ensure network ${v.networkId}: ${what} network ${clash.owner}`, { details: { field: w.map.startsWith('nat_out') ? 'subnets' : 'bridge', value: w.key, owner: clash.owner } });
          }
        }
        const stale = dispatch.filter((e) => e.owner === v.networkId && !wanted.some((w) => w.map === e.map && w.key === e.key && w.chain === e.chain));
        try {
          await apply(nftNetworkScript(table, v.networkId, rules, stale), opts);
          log.info('network rules applied', { network: v.networkId, bridge: v.bridge, rules: rules.length });
        } catch (err) {
          // NOT_FOUND: a stale element vanished meanwhile; ALREADY_EXISTS: a concurrent writer took a key
          if (attempt < MAX_ATTEMPTS && (isCode(err, 'NOT_FOUND') || isCode(err, 'ALREADY_EXISTS'))) continue;
          throw wrap(`ensure network ${v.networkId}`, err);
        }
        try {
          await Promise.all([host.ensure(v, opts), firewalld.ensure(v.bridge, opts)]);
          return;
        } catch (err) {
          throw wrap(`ensure network ${v.networkId}`, err);
        }
      }
    },

    async removeNetwork(id, opts = {}) {
      await host.remove(id, opts).catch((err: unknown) => {
        throw wrap(`remove network ${id}`, err);
      });
      for (let attempt = 1; ; attempt++) {
        const { exists, dispatch } = await readDispatch(opts);
        if (!exists) return;
        const mine = dispatch.filter((e) => e.owner === id);
        const bridge = mine.find((e) => e.map === 'fwd_in')?.key as IfName | undefined;
        if (attempt === 1 && bridge !== undefined) {
          await firewalld.remove([bridge], opts).catch((err: unknown) => {
            throw wrap(`remove network ${id}`, err);
          });
        }
        try {
          await apply(nftRemoveNetworkScript(table, id, mine), opts);
          log.info('network rules removed', { network: id });
          return;
        } catch (err) {
          if (attempt < MAX_ATTEMPTS && isCode(err, 'NOT_FOUND')) continue;
          throw wrap(`remove network ${id}`, err);
        }
      }
    },

    async ensurePorts(p: EndpointPorts, opts = {}) {
      const prepared = preparePorts(p);
      const v = prepared.ports;
      let atoms = prepared.atoms;
      if (atoms.length === 0) return;
      const nat = nftNatElementsScript(table, prepared.nat, 'add');
      let withSkeleton = false;
      for (let attempt = 1; ; attempt++) {
        const script = (withSkeleton ? `${nftSkeleton(table).join('\n')}\n` : '') + nftElementsScript(table, 'create', atoms) + nat;
        try {
          await apply(script, opts);
          log.info('ports published', { endpoint: v.endpointId, elements: atoms.length });
          return;
        } catch (err) {
          if (attempt >= MAX_ATTEMPTS) throw wrap(`ensure ports ${v.endpointId}`, err);
          if (isCode(err, 'NOT_FOUND')) {
            withSkeleton = true; // the table (or a map) is missing: create it in the same transaction
            continue;
          }
          if (!isCode(err, 'ALREADY_EXISTS')) throw wrap(`ensure ports ${v.endpointId}`, err);
          // Slow path: some key exists. Ours and identical → skip it; anything else → conflict.
          const state = await readTable(opts);
          const diff = diffAtoms(state.ports, atoms);
          const first = diff.conflicts[0];
          if (first) throw wrap(`ensure ports ${v.endpointId}`, conflictError(first));
          if (diff.missing.length === 0) return;
          atoms = diff.missing;
          withSkeleton = !state.exists;
        }
      }
    },

    async removePorts(id, opts = {}) {
      // What the endpoint published, when the caller knows it, is removed by key (removeKnown).
      // Anything else (a key gone or taken by another endpoint since: a retried DEL) takes the
      // search by owner below. Measured on the 2-core machine: with only that search, a CNI DEL
      // among 200 containers with a port each read the whole table (`nft -j list table`) and cost
      // 0.30x the reference DEL instead of 0.23x on an empty bridge.
      const known = opts.published?.endpointId === id ? knownPorts(opts.published) : undefined;
      if (known !== undefined && (await removeKnown(id, known, opts))) return;
      for (let attempt = 1; ; attempt++) {
        const state = await readTable(opts);
        const mine = state.ports.filter((a) => a.owner === id);
        const mineNat = state.nat.filter((r) => r.owner === id);
        if (mine.length + mineNat.length === 0) return;
        try {
          await apply(nftDeleteElementsScript(table, mine) + nftNatElementsScript(table, mineNat, 'delete'), opts);
          log.info('ports removed', { endpoint: id, elements: mine.length + mineNat.length });
          return;
        } catch (err) {
          if (attempt < MAX_ATTEMPTS && isCode(err, 'NOT_FOUND')) continue; // removed concurrently
          throw wrap(`remove ports ${id}`, err);
        }
      }
    },

    async list(opts = {}): Promise<FirewallListing> {
      const [state, hostState, fwd] = await Promise.all([readTable(opts), host.read(opts), firewalld.read(opts)]);
      const networks = new Set<NetworkId>();
      for (const c of state.chains) {
        const id = networkOfChain(c);
        if (id !== undefined) networks.add(id);
      }
      for (const e of state.dispatch) networks.add(e.owner);
      const endpoints = new Set<EndpointId>([...state.ports.map((a) => a.owner), ...state.nat.map((r) => r.owner)]);
      const bridges = new Map(state.dispatch.filter((e) => e.map === 'fwd_in').map((e) => [e.owner, e.key as IfName] as const));
      const cutOff = new Set(firewalld.blocked(fwd, [...bridges.values()]));
      const blocked = [...new Set([...host.blocked(hostState, bridges), ...[...bridges].filter(([, b]) => cutOff.has(b)).map(([id]) => id)])].sort();
      return { networks: [...networks].sort(), endpoints: [...endpoints].sort(), ...(blocked.length > 0 ? { blocked } : {}) };
    },

    async removeAll(opts = {}) {
      try {
        await host.removeAll(opts);
        const { dispatch } = await readDispatch(opts);
        await firewalld.remove([...new Set(dispatch.filter((e) => e.map === 'fwd_in').map((e) => e.key as IfName))], opts);
        await apply(nftRemoveAllScript(table), opts);
        log.info('all rules removed', {});
      } catch (err) {
        throw wrap('remove all', err);
      }
    },
  };
}

