/**
 * Pure address arithmetic for IPAM. Addresses become unsigned BigInts (IPv6 needs all 128 bits), a
 * prefix becomes an inclusive range [first, last]. Text forms are the canonical ones of core/net.ts
 * (dotted quad; RFC 5952 for IPv6), so a round trip through a BigInt yields the same IpAddr string.
 */
import ipaddr from 'ipaddr.js';
import type { Family, IpAddr, Prefix } from '../core/net.js';
import { addrFamily, prefixAddr, prefixLen } from '../core/net.js';

/** An inclusive range of addresses of one family. */
export interface AddrRange {
  readonly family: Family;
  readonly first: bigint;
  readonly last: bigint;
}

/** Number of bits in an address of the family: 32 or 128. */
export function familyBits(family: Family): number {
  return family === 4 ? 32 : 128;
}

/** The address as an unsigned integer. */
export function addrToBigInt(addr: IpAddr): bigint {
  if (addrFamily(addr) === 4) {
    let n = 0n;
    for (const part of addr.split('.')) n = (n << 8n) | BigInt(Number(part));
    return n;
  }
  return v6ToBigInt(addr);
}

/** Fast path for the canonical all-hex form; anything else (embedded IPv4, invalid) goes to ipaddr.js. */
function v6ToBigInt(addr: string): bigint {
  const gap = addr.indexOf('::');
  const head = gap < 0 ? addr.split(':') : gap === 0 ? [] : addr.slice(0, gap).split(':');
  const tail = gap < 0 || gap + 2 === addr.length ? [] : addr.slice(gap + 2).split(':');
  const zeros = 8 - head.length - tail.length;
  if (addr.includes('.') || zeros < 0 || (gap < 0 && zeros !== 0) || (gap >= 0 && zeros < 1) || ![...head, ...tail].every((h) => HEXTET.test(h))) {
    let n = 0n;
    for (const part of ipaddr.IPv6.parse(addr).parts) n = (n << 16n) | BigInt(part);
    return n;
  }
  let n = 0n;
  for (const h of head) n = (n << 16n) | BigInt(parseInt(h, 16));
  n <<= BigInt(16 * zeros);
  for (const h of tail) n = (n << 16n) | BigInt(parseInt(h, 16));
  return n;
}
const HEXTET = /^[0-9a-fA-F]{1,4}$/;

/** The canonical text of the address `n` of the family. `n` must fit the family's width. */
export function bigIntToAddr(n: bigint, family: Family): IpAddr {
  if (n < 0n || n >> BigInt(familyBits(family)) !== 0n) {
    throw new RangeError(`${n} is not an IPv${family} address`);
  }
  if (family === 4) {
    return `${Number((n >> 24n) & 255n)}.${Number((n >> 16n) & 255n)}.${Number((n >> 8n) & 255n)}.${Number(n & 255n)}` as IpAddr;
  }
  const parts: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) parts.push(Number((n >> shift) & 0xffffn));
  return new ipaddr.IPv6(parts).toRFC5952String() as IpAddr;
}

/** Number of addresses in a prefix of length `len` in the family (2^(bits-len)). */
export function blockSize(len: number, family: Family): bigint {
  return 1n << BigInt(familyBits(family) - len);
}

/** Every address of the prefix, host bits of its address ignored: network address .. last address. */
export function prefixRange(p: Prefix): AddrRange {
  const family = addrFamily(p);
  const size = blockSize(prefixLen(p), family);
  const first = addrToBigInt(prefixAddr(p)) & ~(size - 1n);
  return { family, first, last: first + size - 1n };
}

/** The prefix of length `len` whose network address is `first` (which must be aligned). */
export function prefixAt(first: bigint, len: number, family: Family): Prefix {
  return `${bigIntToAddr(first, family)}/${len}` as Prefix;
}

/** Number of addresses in a range. */
export function rangeSize(r: AddrRange): bigint {
  return r.last - r.first + 1n;
}

export function rangeContains(r: AddrRange, n: bigint): boolean {
  return n >= r.first && n <= r.last;
}

export function rangesOverlap(a: AddrRange, b: AddrRange): boolean {
  return a.family === b.family && a.first <= b.last && b.first <= a.last;
}

/** True when `inner` lies entirely inside `outer`. */
export function rangeWithin(inner: AddrRange, outer: AddrRange): boolean {
  return inner.family === outer.family && inner.first >= outer.first && inner.last <= outer.last;
}

/** The smallest multiple of `size` (a power of two) that is >= n. */
export function alignUp(n: bigint, size: bigint): bigint {
  return ((n + size - 1n) / size) * size;
}

/**
 * The host addresses of a subnet: without the network address (for IPv6 the subnet-router anycast
 * address, RFC 4291 §2.6.1) and, for IPv4, without the broadcast address. Undefined when nothing is
 * left (IPv4 /31 and /32, IPv6 /128).
 */
export function hostRange(subnet: Prefix): AddrRange | undefined {
  const all = prefixRange(subnet);
  const first = all.first + 1n;
  const last = all.family === 4 ? all.last - 1n : all.last;
  return first <= last ? { family: all.family, first, last } : undefined;
}

/** The part of `a` that also lies in `b`, if any. */
export function intersect(a: AddrRange, b: AddrRange): AddrRange | undefined {
  if (!rangesOverlap(a, b)) return undefined;
  return { family: a.family, first: a.first > b.first ? a.first : b.first, last: a.last < b.last ? a.last : b.last };
}

/** The address `delta` positions after `addr` (negative: before). Throws RangeError outside the family. */
export function offsetAddr(addr: IpAddr, delta: bigint): IpAddr {
  return bigIntToAddr(addrToBigInt(addr) + delta, addrFamily(addr));
}

/**
 * The addresses a pool hands out dynamically: the ip-range (or the whole subnet) without the
 * subnet's network and broadcast addresses. Gateway and aux addresses are excluded by the caller.
 * Undefined when nothing is left.
 */
export function allocRange(subnet: Prefix, ipRange?: Prefix): AddrRange | undefined {
  const hosts = hostRange(subnet);
  if (hosts === undefined) return undefined;
  return ipRange === undefined ? hosts : intersect(hosts, prefixRange(ipRange));
}
