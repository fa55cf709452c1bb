/**
 * Pool rules, all pure: the default address pools, the ULA prefix derived from a seed, validation
 * of a pool request, the overlap check against other networks and host routes, and the choice of
 * the first free default subnet.
 *
 * Decisions:
 * - Default IPv4 pools are 10.89.0.0/16 and 10.90.0.0/16 split into /24s (512 networks of 253
 *   containers), not Docker's 172.17-31/16s and 192.168/20s that collide with office, VPN and home
 *   ranges. IPv6 defaults to a ULA /48 (RFC 4193) split into /64s; its 40-bit global ID is the first
 *   5 bytes of SHA-256(seed), so one host always gets the same prefix and different hosts
 *   (almost surely) different ones. If the configured default pools have no IPv6 entry the ULA
 *   pool is added (as Docker does).
 * - Point-to-point subnets are refused: an IPv4 /31 or /32 or an IPv6 /127 or /128 leaves no
 *   address for a gateway plus a container on a bridge (RFC 3021 /31 links are not supported).
 *   The smallest subnets are IPv4 /30 (gateway + 1) and IPv6 /126 (gateway + 2).
 * - The network address is never handed out, in IPv6 either (it is the subnet-router anycast
 *   address); the IPv4 broadcast address neither.
 * - Host routes of length 0 (default routes) are ignored: they "overlap" everything.
 * - Subnets inside 0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/3 (multicast, reserved, broadcast), ::/128,
 *   ::1/128, fe80::/10 and ff00::/8 are refused.
 */
import { createHash } from 'node:crypto';
import { TsnetError } from '../core/errors.js';
import type { Family, IpAddr, NetworkId, Prefix } from '../core/net.js';
import { addrFamily, parseIpAddr, parsePrefix, parseSubnet, prefixLen } from '../core/net.js';
import type { DefaultPool, PoolRecord, PoolRequest } from './api.js';
import { poolIdFor } from './api.js';
import type { AddrRange } from './ranges.js';
import {
  addrToBigInt, alignUp, allocRange, bigIntToAddr, blockSize, hostRange, prefixAt, prefixRange, rangeContains,
  rangeSize, rangesOverlap, rangeWithin,
} from './ranges.js';

/** The default IPv4 pools: 10.89.0.0/16 and 10.90.0.0/16 in /24s. */
export const DEFAULT_IPV4_POOLS: readonly DefaultPool[] = [
  { base: '10.89.0.0/16', size: 24 },
  { base: '10.90.0.0/16', size: 24 },
];
/** Prefix length of each default IPv6 network carved from the ULA /48. */
export const ULA_SUBNET_SIZE = 64;

/** Longest prefix a pool may have: leaves a gateway and at least one container address. */
export const MAX_POOL_LEN = { 4: 30, 6: 126 } as const satisfies Record<Family, number>;

const RESERVED: readonly Prefix[] = ['0.0.0.0/8', '127.0.0.0/8', '224.0.0.0/3', '::/128', '::1/128', 'fe80::/10', 'ff00::/8'].map(
  (p) => parsePrefix(p),
);

function invalid(field: string, value: unknown, message: string, extra: Record<string, unknown> = {}): TsnetError {
  return new TsnetError('INVALID_CONFIG', message, { details: { field, value, ...extra } });
}

const familyName = (f: Family): string => `IPv${f}`;

/**
 * The RFC 4193 ULA /48 of a host: fd00::/8 plus a 40-bit global ID taken from SHA-256(seed).
 * Pass a stable per-host value (engine or machine id).
 */
export function ulaPrefix(seed: string): Prefix {
  if (typeof seed !== 'string' || seed.length === 0) throw invalid('ula-seed', seed, 'ula-seed: must be a non-empty string (the host or engine id)');
  const digest = createHash('sha256').update(seed, 'utf8').digest();
  let globalId = 0n;
  for (let i = 0; i < 5; i++) globalId = (globalId << 8n) | BigInt(digest[i] ?? 0);
  return prefixAt((0xfdn << 120n) | (globalId << 80n), 48, 6);
}

/** A validated default pool. */
export interface ResolvedPool {
  readonly base: Prefix;
  readonly size: number;
  readonly family: Family;
}

/**
 * Validates the configured default pools (or takes DEFAULT_IPV4_POOLS) and appends the ULA /48 split
 * into /64s when no IPv6 pool is configured. INVALID_CONFIG with field 'default-address-pools'.
 */
export function resolveDefaultPools(pools: readonly DefaultPool[] | undefined, ulaSeed: string): ResolvedPool[] {
  const field = 'default-address-pools';
  const out: ResolvedPool[] = [];
  for (const p of pools ?? DEFAULT_IPV4_POOLS) {
    const base = parseSubnet(p.base, field);
    const family = addrFamily(base);
    const baseLen = prefixLen(base);
    if (!Number.isInteger(p.size) || p.size < baseLen || p.size > MAX_POOL_LEN[family]) {
      throw invalid(field, p, `${field}: size ${p.size} for base ${base} must be an integer from ${baseLen} to ${MAX_POOL_LEN[family]}`);
    }
    const reserved = RESERVED.find((r) => rangesOverlap(prefixRange(r), prefixRange(base)));
    if (reserved !== undefined) throw invalid(field, p, `${field}: base ${base} overlaps the reserved range ${reserved}`);
    out.push({ base, size: p.size, family });
  }
  if (!out.some((p) => p.family === 6)) out.push({ base: ulaPrefix(ulaSeed), size: ULA_SUBNET_SIZE, family: 6 });
  return out;
}

/** A pool request with every field parsed and checked against the others. */
export interface ValidatedPoolRequest {
  readonly networkId: NetworkId;
  readonly networkName: string;
  readonly family: Family;
  readonly subnet?: Prefix;
  readonly gateway?: IpAddr;
  readonly ipRange?: Prefix;
  readonly auxAddresses: Readonly<Record<string, IpAddr>>;
}

/** Refuses subnets without room for a gateway and a container, and reserved ranges. */
export function checkSubnetUsable(subnet: Prefix, field = 'subnet'): void {
  const family = addrFamily(subnet);
  const len = prefixLen(subnet);
  if (len > MAX_POOL_LEN[family]) {
    throw invalid(
      field,
      subnet,
      `${field} ${subnet} is too small for a bridge network: a ${familyName(family)} /${len} leaves no address for a gateway and a container ` +
        `(point-to-point /31 and /127 links are not supported); use a /${MAX_POOL_LEN[family]} or larger subnet`,
    );
  }
  const reserved = RESERVED.find((r) => rangesOverlap(prefixRange(r), prefixRange(subnet)));
  if (reserved !== undefined) {
    throw invalid(field, subnet, `${field} ${subnet} overlaps the reserved range ${reserved} (loopback, multicast, link-local or unspecified addresses); choose a private range such as 10.0.0.0/8 or fd00::/8`);
  }
}

/** Why `addr` cannot be a host address of `subnet` (other family, outside, network or broadcast address), or undefined. */
export function hostAddrProblem(subnet: Prefix, addr: IpAddr): string | undefined {
  if (addrFamily(addr) !== addrFamily(subnet)) return `is not an ${familyName(addrFamily(subnet))} address like subnet ${subnet}`;
  const all = prefixRange(subnet);
  const n = addrToBigInt(addr);
  if (!rangeContains(all, n)) return `is outside subnet ${subnet}`;
  if (n === all.first) return `is the network address of subnet ${subnet}`;
  if (all.family === 4 && n === all.last) return `is the broadcast address of subnet ${subnet}`;
  return undefined;
}

function firstHost(subnet: Prefix): IpAddr {
  const hosts = hostRange(subnet);
  if (hosts === undefined) throw new TsnetError('INTERNAL', `subnet ${subnet} has no host addresses`);
  return bigIntToAddr(hosts.first, hosts.family);
}

const AUX_NAME = /^[^\s=\u0000-\u001f\u007f]{1,64}$/;

/**
 * Parses and cross-checks a pool request without touching any store: subnet (family, size, reserved
 * ranges), gateway (inside the subnet, not its network or broadcast address), ip-range (a sub-prefix
 * of the subnet with addresses left to hand out), aux addresses (inside the subnet, distinct, not the
 * gateway). Gateway, ip-range and aux addresses need an explicit subnet.
 */
export function validatePoolRequest(req: PoolRequest): ValidatedPoolRequest {
  const networkName = req.networkName ?? req.networkId;
  if (typeof networkName !== 'string' || networkName.length === 0 || networkName.length > 256) {
    throw invalid('network name', networkName, 'network name: must be 1-256 characters');
  }
  if (req.family !== undefined && req.family !== 4 && req.family !== 6) {
    throw invalid('family', req.family, `family: must be 4 or 6, got ${JSON.stringify(req.family)}`);
  }
  const aux = Object.entries(req.auxAddresses ?? {});
  if (req.subnet === undefined) {
    const needs = (field: string, flag: string): TsnetError =>
      invalid(field, undefined, `${field} needs an explicit subnet: add --subnet (without it a subnet is picked from the default pools and its addresses are not known in advance)`, { flag });
    if (req.gateway !== undefined) throw needs('gateway', '--gateway');
    if (req.ipRange !== undefined) throw needs('ip-range', '--ip-range');
    if (aux.length > 0) throw needs('aux-address', '--aux-address');
    return { networkId: req.networkId, networkName, family: req.family ?? 4, auxAddresses: {} };
  }

  const subnet = parseSubnet(req.subnet, 'subnet');
  const family = addrFamily(subnet);
  if (req.family !== undefined && req.family !== family) {
    throw invalid('subnet', req.subnet, `subnet ${subnet} is ${familyName(family)} but an ${familyName(req.family)} pool was requested`);
  }
  checkSubnetUsable(subnet);

  let gateway: IpAddr | undefined;
  if (req.gateway !== undefined) {
    gateway = parseIpAddr(req.gateway, 'gateway');
    const why = hostAddrProblem(subnet, gateway);
    if (why !== undefined) {
      throw invalid('gateway', req.gateway, `gateway ${gateway} ${why}; choose a host address inside the subnet, such as ${firstHost(subnet)}`);
    }
  }
  const gw = gateway ?? firstHost(subnet);

  let ipRange: Prefix | undefined;
  if (req.ipRange !== undefined) {
    ipRange = parseSubnet(req.ipRange, 'ip-range');
    if (addrFamily(ipRange) !== family || !rangeWithin(prefixRange(ipRange), prefixRange(subnet))) {
      throw invalid('ip-range', req.ipRange, `ip-range ${ipRange} is not inside subnet ${subnet}; it must be a sub-prefix of the subnet (such as ${subnet})`);
    }
  }

  const auxAddresses: Record<string, IpAddr> = {};
  const seen = new Map<IpAddr, string>();
  for (const [name, raw] of aux) {
    if (!AUX_NAME.test(name)) {
      throw invalid('aux-address', name, `aux-address name ${JSON.stringify(name)} must be 1-64 characters without '=', spaces or control characters`);
    }
    const addr = parseIpAddr(raw, 'aux-address');
    const why = hostAddrProblem(subnet, addr);
    if (why !== undefined) throw invalid('aux-address', raw, `aux-address ${name}=${addr} ${why}; aux addresses must be host addresses inside the subnet`);
    if (addr === gw) throw invalid('aux-address', raw, `aux-address ${name}=${addr} is the gateway address; choose another address`);
    const other = seen.get(addr);
    if (other !== undefined) throw invalid('aux-address', raw, `aux-address ${name}=${addr} is already reserved as aux-address ${other}`);
    seen.set(addr, name);
    auxAddresses[name] = addr;
  }

  if (ipRange !== undefined && capacity(subnet, ipRange, gw, Object.values(auxAddresses)).free === 0n) {
    throw invalid('ip-range', req.ipRange, `ip-range ${ipRange} leaves no address to hand out (only the network, broadcast, gateway or aux addresses are in it); use a larger ip-range`);
  }

  return {
    networkId: req.networkId,
    networkName,
    family,
    subnet,
    ...(gateway !== undefined ? { gateway } : {}),
    ...(ipRange !== undefined ? { ipRange } : {}),
    auxAddresses,
  };
}

/**
 * The dynamic range of a pool, the addresses in it that are never handed out (gateway, aux) and
 * how many are left to hand out.
 */
export function capacity(
  subnet: Prefix,
  ipRange: Prefix | undefined,
  gateway: IpAddr,
  aux: readonly IpAddr[],
): { readonly range: AddrRange | undefined; readonly excluded: ReadonlySet<bigint>; readonly free: bigint } {
  const range = allocRange(subnet, ipRange);
  const excluded = new Set<bigint>();
  if (range === undefined) return { range, excluded, free: 0n };
  for (const a of [gateway, ...aux]) {
    const n = addrToBigInt(a);
    if (addrFamily(a) === range.family && rangeContains(range, n)) excluded.add(n);
  }
  return { range, excluded, free: rangeSize(range) - BigInt(excluded.size) };
}

/** The pool record for a validated request and the subnet it gets. */
export function buildPoolRecord(v: ValidatedPoolRequest, subnet: Prefix, source: PoolRecord['source']): PoolRecord {
  return {
    schemaVersion: 1,
    poolId: poolIdFor(v.networkId, v.family),
    networkId: v.networkId,
    networkName: v.networkName,
    family: v.family,
    subnet,
    gateway: v.gateway ?? firstHost(subnet),
    ...(v.ipRange !== undefined ? { ipRange: v.ipRange } : {}),
    auxAddresses: { ...v.auxAddresses },
    source,
  };
}

/** What a subnet collides with. */
export type Conflict =
  | { readonly kind: 'network'; readonly pool: PoolRecord }
  | { readonly kind: 'route'; readonly route: Prefix };

/** Host routes that take part in overlap checks: every route except default routes (/0). */
function relevantRoutes(routes: readonly Prefix[], family: Family): Prefix[] {
  return routes.filter((r) => addrFamily(r) === family && prefixLen(r) > 0);
}

/** The first existing pool, else the first host route (not /0), that overlaps `subnet`. */
export function findConflict(subnet: Prefix, pools: readonly PoolRecord[], routes: readonly Prefix[]): Conflict | undefined {
  const r = prefixRange(subnet);
  const pool = pools.find((p) => rangesOverlap(prefixRange(p.subnet), r));
  if (pool !== undefined) return { kind: 'network', pool };
  const route = relevantRoutes(routes, r.family).find((p) => rangesOverlap(prefixRange(p), r));
  return route !== undefined ? { kind: 'route', route } : undefined;
}

/** INVALID_CONFIG (field 'subnet') naming the collision and how to fix it. */
export function conflictError(subnet: Prefix, c: Conflict): TsnetError {
  switch (c.kind) {
    case 'network':
      return invalid(
        'subnet',
        subnet,
        `subnet ${subnet} overlaps network ${JSON.stringify(c.pool.networkName)} (${c.pool.subnet}); choose another --subnet or remove that network`,
        { conflict: { kind: 'network', networkId: c.pool.networkId, networkName: c.pool.networkName, subnet: c.pool.subnet } },
      );
    case 'route':
      return invalid(
        'subnet',
        subnet,
        `subnet ${subnet} overlaps the host route ${c.route} (the host already reaches those addresses through another interface, e.g. a LAN or VPN); choose another --subnet`,
        { conflict: { kind: 'route', route: c.route } },
      );
  }
}

/**
 * The first subnet of the default pools of `family`, in order, that overlaps no existing pool and no
 * host route. Work is bounded by the number of pools and routes, not by the number of candidate
 * subnets (a ULA /48 has 65,536 /64s): each collision moves the search past the colliding prefix.
 */
export function pickDefaultSubnet(
  family: Family,
  defaults: readonly ResolvedPool[],
  pools: readonly PoolRecord[],
  routes: readonly Prefix[],
): Prefix | undefined {
  const taken: AddrRange[] = [
    ...pools.filter((p) => p.family === family).map((p) => prefixRange(p.subnet)),
    ...relevantRoutes(routes, family).map(prefixRange),
  ];
  for (const d of defaults) {
    if (d.family !== family) continue;
    const base = prefixRange(d.base);
    const step = blockSize(d.size, family);
    const inBase = taken.filter((t) => rangesOverlap(t, base)).sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
    // Sweep the taken ranges in order of their start. Invariant: every range seen so far ends
    // before `cand`, every range not seen yet starts after the ones seen.
    let cand = base.first;
    for (const t of inBase) {
      if (cand + step - 1n > base.last) break;
      if (t.first > cand + step - 1n) break; // starts after the candidate: so does every later range
      if (t.last >= cand) cand = alignUp(t.last + 1n, step);
    }
    if (cand + step - 1n <= base.last) return prefixAt(cand, d.size, family);
  }
  return undefined;
}

/** EXHAUSTED: no default subnet of the family is left. */
export function defaultPoolsExhausted(family: Family, defaults: readonly ResolvedPool[]): TsnetError {
  const mine = defaults.filter((d) => d.family === family);
  if (mine.length === 0) {
    return new TsnetError('EXHAUSTED', `no default ${familyName(family)} address pools are configured; pass --subnet or configure default address pools`, {
      details: { family },
    });
  }
  const total = mine.reduce((n, d) => n + (1n << BigInt(d.size - prefixLen(d.base))), 0n);
  const list = mine.map((d) => `${d.base} in /${d.size}s`).join(', ');
  return new TsnetError(
    'EXHAUSTED',
    `no free ${familyName(family)} subnet left in the default address pools (${list}: ${total} subnets, each used by a network or overlapping a host route); ` +
      'remove unused networks, pass --subnet, or configure more default address pools',
    { details: { family, pools: mine.map((d) => ({ base: d.base, size: d.size })), subnets: total.toString() } },
  );
}
