/**
 * Cluster IPAM in blocks (Calico's design): a cluster network's dynamic range (its ip-range, else
 * its subnet) is cut into aligned blocks (/26 by default: 64 addresses), and each host leases
 * blocks for itself in the cluster store, one at a time, when it has none left. Addresses are then
 * handed out from the host's own blocks by the one allocation algorithm (range-set.ts), over a
 * reservation port in the host's store: a container start costs no store round trip unless it
 * needs a new block. Pure: the lease itself is cluster/port.ts's.
 */
import { addrFamily, prefixLen, type IpAddr, type Prefix } from '../core/net.js';
import { capacity } from './pools.js';
import type { RangeSet } from './range-set.js';
import { addrToBigInt, allocRange, blockSize, prefixAt, prefixRange } from './ranges.js';

/** Blocks of /26 (IPv4), or the whole range when it is smaller. */
export function blockLenFor(subnet: Prefix, ipRange?: Prefix): number {
  return Math.max(prefixLen(ipRange ?? subnet), addrFamily(subnet) === 4 ? 26 : 122);
}

/** Every block of the network's dynamic range, in address order. */
export function blocksOf(subnet: Prefix, ipRange: Prefix | undefined, blockLen: number): Prefix[] {
  const r = prefixRange(ipRange ?? subnet);
  const size = blockSize(blockLen, r.family);
  const out: Prefix[] = [];
  for (let n = r.first; n <= r.last && out.length < 65_536; n += size) out.push(prefixAt(n, blockLen, r.family));
  return out;
}

/** The block an address lies in. */
export function blockOf(ip: IpAddr, blockLen: number): Prefix {
  const fam = addrFamily(ip);
  const size = blockSize(blockLen, fam);
  return prefixAt((addrToBigInt(ip) / size) * size, blockLen, fam);
}

/**
 * The range set a host allocates from: its blocks (in order), each clipped to the subnet's host
 * addresses, the gateway excluded. A set without ranges: no block yet.
 */
export function blockSet(subnet: Prefix, gateway: IpAddr, blocks: readonly Prefix[]): RangeSet {
  const fam = addrFamily(subnet);
  const ranges = blocks.flatMap((b) => {
    const cap = capacity(subnet, b, gateway, []);
    return cap.range === undefined || cap.free <= 0n ? [] : [{ subnet, first: cap.range.first, last: cap.range.last, gateway, excluded: cap.excluded }];
  });
  return { family: fam, ranges };
}

/** The whole subnet as one range (static addresses may lie in any block), the gateway excluded. */
export function subnetSet(subnet: Prefix, gateway: IpAddr): RangeSet {
  const cap = capacity(subnet, undefined, gateway, []);
  const range = allocRange(subnet);
  return { family: addrFamily(subnet), ranges: range === undefined ? [] : [{ subnet, first: range.first, last: range.last, gateway, excluded: cap.excluded }] };
}

