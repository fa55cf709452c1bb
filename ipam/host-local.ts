/**
 * Addresses for CNI attachments in the reference host-local plugin's on-disk layout
 * (sys/store/host-local.ts), through the same range-set allocator as every other door
 * (range-set.ts): one address per range set of the configuration, a requested one where the
 * runtime asks (the `ips` capability), round robin after `last_reserved_ip.<set index>`.
 *
 * An attachment is `(container id, interface name)`; its reservations are the files whose content
 * names it (files of old host-local versions hold the container id only and match on it alone).
 * No zod here: the CNI plugin bundle includes this file.
 */
import { TsnetError } from '../core/errors.js';
import { addrFamily, type IpAddr, type Prefix } from '../core/net.js';
import type { HostLocalReservation, HostLocalStore } from '../sys/store/api.js';
import { reserveNext, reserveStatic, rangeOf, setCapacity, type RangeSet, type ReservationPort, type SetRange } from './range-set.js';
import { addrToBigInt, bigIntToAddr } from './ranges.js';

export interface Attachment {
  readonly containerId: string;
  readonly ifName: string;
}

/** One address handed out, with the range (subnet, gateway) it came from. */
export interface AttachmentAddress {
  readonly ip: IpAddr;
  readonly subnet: Prefix;
  readonly gateway: IpAddr | undefined;
  readonly set: number;
}

/** Does a reservation belong to the attachment? Legacy files match on the container id alone. */
export function ownedBy(r: HostLocalReservation, att: Attachment): boolean {
  return r.containerId === att.containerId.trim() && (r.ifName === undefined || r.ifName === att.ifName);
}

const ownerOf = (r: HostLocalReservation): string => (r.ifName === undefined ? r.containerId : `${r.containerId}/${r.ifName}`);

/** The range set `index`'s reservations in the directory, as the allocator's port. */
function portOf(store: HostLocalStore, att: Attachment, index: number): ReservationPort {
  return {
    reserve: (addr) => store.reserve(addr, att.containerId, att.ifName),
    release: (addr) => store.release(addr),
    list: async () => (await store.list()).map((r) => ({ addr: r.ip as IpAddr, owner: ownerOf(r) })),
    getCursor: async () => (await store.lastReserved(index)) as IpAddr | undefined,
    setCursor: (addr) => store.setLastReserved(index, addr),
  };
}

function describe(set: RangeSet): string {
  return set.ranges.map((r) => `${bigIntToAddr(r.first, set.family)}-${bigIntToAddr(r.last, set.family)}`).join(', ');
}

function setOf(sets: readonly RangeSet[], ip: IpAddr): { index: number; range: SetRange } | undefined {
  const n = addrToBigInt(ip);
  for (let i = 0; i < sets.length; i++) {
    const set = sets[i] as RangeSet;
    if (set.family !== addrFamily(ip)) continue;
    const range = rangeOf(set, n);
    if (range !== undefined) return { index: i, range };
  }
  return undefined;
}

/**
 * Reserves one address per range set (`requested` ones where given: each in exactly one set, at
 * most one per set); releases what it took when any set fails.
 */
export async function allocateAttachment(store: HostLocalStore, sets: readonly RangeSet[], att: Attachment, requested: readonly IpAddr[]): Promise<AttachmentAddress[]> {
  const want = new Map<number, IpAddr>();
  for (const ip of requested) {
    const hit = setOf(sets, ip);
    if (hit === undefined) throw new TsnetError('INVALID_CONFIG', `ips: requested address ${ip} is in none of the configured ranges`, { details: { field: 'ips' } });
    if (want.has(hit.index)) throw new TsnetError('INVALID_CONFIG', `ips: two requested addresses in range set ${hit.index}`, { details: { field: 'ips' } });
    want.set(hit.index, ip);
  }
  const owner = `${att.containerId.trim()}/${att.ifName}`;
  const got: AttachmentAddress[] = [];
  try {
    for (let i = 0; i < sets.length; i++) {
      const set = sets[i] as RangeSet;
      const port = portOf(store, att, i);
      const asked = want.get(i);
      const r = asked !== undefined
        ? await reserveStatic(set, port, asked, owner, {
            label: `range set ${i}`,
            inUse: (by) => new TsnetError('ALREADY_EXISTS', `ips: requested address ${asked} is already reserved by ${by === 'the gateway' ? by : `container ${by.split('/')[0] ?? by}`}`, { details: { field: 'ips' } }),
            outside: () => new TsnetError('INVALID_CONFIG', `ips: requested address ${asked} is in none of the configured ranges`, { details: { field: 'ips' } }),
            excludedName: () => 'the gateway',
          })
        : await reserveNext(set, port, owner, {
            label: `range set ${i}`,
            exhausted: () => new TsnetError('EXHAUSTED', `ipam: no IP addresses available in range set ${describe(set)}`, { details: { field: 'ranges' } }),
          });
      got.push({ ip: r.addr, subnet: r.range.subnet, gateway: r.range.gateway, set: i });
    }
  } catch (err) {
    for (const a of got) await store.release(a.ip).catch(() => undefined);
    throw err;
  }
  return got;
}

/**
 * Releases the attachment's reservations; idempotent. `known`: its addresses (from prevResult):
 * only those files are read when they are all there, else the directory is walked.
 */
export async function releaseAttachment(store: HostLocalStore, att: Attachment, known: readonly IpAddr[]): Promise<void> {
  // No lock: only the attachment's own files are removed, and a file cannot change owner while it
  // exists. (GC, which removes other owners' files, takes the lock.)
  if (known.length > 0) {
    let released = 0;
    for (const ip of known) {
      const r = await store.get(ip);
      if (r !== undefined && ownedBy(r, att)) {
        await store.release(ip);
        released++;
      }
    }
    if (released === known.length) return;
  }
  for (const r of await store.list()) if (ownedBy(r, att)) await store.release(r.ip);
}

/** CHECK: every one of `addrs` that lies in the sets is reserved for the attachment. */
export async function checkAttachment(store: HostLocalStore, sets: readonly RangeSet[], att: Attachment, addrs: readonly IpAddr[]): Promise<void> {
  const mine = addrs.filter((a) => setOf(sets, a) !== undefined);
  if (mine.length === 0) throw new TsnetError('NOT_FOUND', `ipam: prevResult has no address in the configured ranges for ${att.containerId}/${att.ifName}`, { details: { field: 'prevResult.ips' } });
  for (const ip of mine) {
    const r = await store.get(ip);
    if (r === undefined || !ownedBy(r, att)) {
      throw new TsnetError('NOT_FOUND', `ipam: ${ip} is not reserved for ${att.containerId}/${att.ifName}${r ? ` (reserved by ${r.containerId})` : ''}`, { details: { field: 'ips' } });
    }
  }
}

/** Addresses (of those given) that lie in one of the sets. */
export function inSets(sets: readonly RangeSet[], addrs: readonly IpAddr[]): IpAddr[] {
  return addrs.filter((a) => setOf(sets, a) !== undefined);
}

/**
 * GC: releases every reservation not owned by a valid attachment, and temp files a killed plugin
 * left; returns the released addresses.
 */
export async function gcAttachments(store: HostLocalStore, valid: readonly Attachment[], isAlive: (pid: number) => boolean): Promise<string[]> {
  return store.withLock(async () => {
    await store.removeStaleTemps(isAlive);
    const released: string[] = [];
    for (const r of await store.list()) {
      if (valid.some((a) => ownedBy(r, a))) continue;
      await store.release(r.ip);
      released.push(r.ip);
    }
    return released;
  });
}

/** STATUS: the index of the first range set with no address left, or undefined when every set can serve an ADD. */
export async function exhaustedSet(store: HostLocalStore, sets: readonly RangeSet[]): Promise<number | undefined> {
  const held = await store.list();
  for (let i = 0; i < sets.length; i++) {
    const set = sets[i] as RangeSet;
    let used = 0n;
    for (const r of held) {
      const ip = r.ip as IpAddr;
      if (addrFamily(ip) !== set.family) continue;
      const n = addrToBigInt(ip);
      const range = rangeOf(set, n);
      if (range !== undefined && !range.excluded.has(n)) used++;
    }
    if (used >= setCapacity(set)) return i;
  }
  return undefined;
}
