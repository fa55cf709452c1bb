/**
 * The allocation algorithm every door shares: one address from a RANGE SET (CNI's term: an ordered
 * list of ranges of one family, each a stretch of a subnet with its gateway) over a reservation
 * port. A CNM network's pool is a set of one range (its subnet or ip-range, the gateway and aux
 * addresses excluded); a CNI `ipam.ranges` entry is a set of one or more ranges. Where the
 * reservations live is the port's business: the embedded store (store-adapter.ts) or the reference
 * host-local plugin's directory (host-local.ts).
 *
 * Dynamic allocation is round robin like CNI host-local: the search starts after the cursor (the
 * address handed out last), walks the set's ranges in order and wraps around, so a released address
 * is reused last. The common case costs one cursor read, one reserve and one cursor write; only when
 * the addresses after the cursor are taken is the pool listed once. Work is then bounded by the
 * number of reserved and excluded addresses plus lost races, never by the size of the set: an IPv6
 * /64 is never iterated, and exhaustion is detected by counting. `reserve` must be an exclusive
 * create (the arbiter between concurrent requests in any number of processes); no lock is needed.
 *
 * No zod and no heavy imports here: the CNI plugin bundle includes this file.
 */
import { TsnetError, wrap } from '../core/errors.js';
import { addrFamily, type Family, type IpAddr, type Prefix } from '../core/net.js';
import { addrToBigInt, bigIntToAddr } from './ranges.js';

/** One stretch of a set: the addresses [first, last] of `subnet`, minus `excluded`. */
export interface SetRange {
  readonly subnet: Prefix;
  readonly first: bigint;
  readonly last: bigint;
  readonly gateway: IpAddr | undefined;
  /** Never handed out (the gateway, aux addresses), even when asked for statically. */
  readonly excluded: ReadonlySet<bigint>;
}

export interface RangeSet {
  readonly family: Family;
  readonly ranges: readonly SetRange[];
}

export interface Reservation {
  readonly addr: IpAddr;
  readonly owner: string;
}

/** Where one set's reservations live; `reserve` is an exclusive create. */
export interface ReservationPort {
  /** true if `addr` is now held by `owner`, false if it was already held (by anyone). */
  reserve(addr: IpAddr, owner: string): Promise<boolean>;
  release(addr: IpAddr): Promise<void>;
  /** Every reservation (of any set sharing the port: callers filter by range). */
  list(): Promise<Reservation[]>;
  getCursor(): Promise<IpAddr | undefined>;
  /** Throwing undoes the reservation just made (the caller releases it). */
  setCursor(addr: IpAddr): Promise<void>;
}

export interface Reserved {
  readonly addr: IpAddr;
  readonly range: SetRange;
}

/** Addresses tried after the cursor before the reservations are listed. */
const FAST_TRIES = 8;

export function rangeOf(set: RangeSet, n: bigint): SetRange | undefined {
  return set.ranges.find((r) => n >= r.first && n <= r.last);
}

/** How many addresses the set can hand out. */
export function setCapacity(set: RangeSet): bigint {
  let free = 0n;
  for (const r of set.ranges) {
    let ex = 0n;
    for (const n of r.excluded) if (n >= r.first && n <= r.last) ex++;
    free += r.last - r.first + 1n - ex;
  }
  return free;
}

function cursorNumber(set: RangeSet, cursor: IpAddr | undefined): bigint | undefined {
  if (cursor === undefined) return undefined;
  try {
    if (addrFamily(cursor) !== set.family) return undefined;
    const n = addrToBigInt(cursor);
    return rangeOf(set, n) === undefined ? undefined : n;
  } catch {
    return undefined;
  }
}

/**
 * Every address of the set once, in host-local's order: after `after` (when it lies in the set),
 * through the rest of its range, then the next ranges, wrapping around. Excluded ones are skipped.
 */
export function* candidates(set: RangeSet, after: bigint | undefined): Generator<{ readonly n: bigint; readonly range: SetRange }> {
  const rs = set.ranges;
  if (rs.length === 0) return;
  let idx = 0;
  let n: bigint = (rs[0] as SetRange).first;
  if (after !== undefined) {
    const i = rs.findIndex((r) => after >= r.first && after <= r.last);
    if (i >= 0) {
      idx = i;
      n = after + 1n;
      if (n > (rs[i] as SetRange).last) {
        idx = (i + 1) % rs.length;
        n = (rs[idx] as SetRange).first;
      }
    }
  }
  const total = rs.reduce((s, r) => s + (r.last - r.first + 1n), 0n);
  for (let seen = 0n; seen < total; seen++) {
    const r = rs[idx] as SetRange;
    if (!r.excluded.has(n)) yield { n, range: r };
    n += 1n;
    if (n > r.last) {
      idx = (idx + 1) % rs.length;
      n = (rs[idx] as SetRange).first;
    }
  }
}

export interface NextOptions {
  /** The error for a set with nothing left, given how many addresses it can hand out. */
  readonly exhausted: (capacity: bigint) => TsnetError;
  /** How many addresses one request may lose to concurrent requests before giving up (default 4096). */
  readonly maxLostRaces?: number;
  /** Context for wrapped port errors ("pool X", "range set 0"). */
  readonly label: string;
}

async function call<T>(context: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw wrap(`ipam: ${context}`, err);
  }
}

/** Reserves the next free address of the set for `owner` and moves the cursor there. */
export async function reserveNext(set: RangeSet, port: ReservationPort, owner: string, o: NextOptions): Promise<Reserved> {
  const cap = setCapacity(set);
  if (cap <= 0n) throw o.exhausted(0n);
  const maxLost = o.maxLostRaces ?? 4096;
  const tryReserve = async (n: bigint, range: SetRange): Promise<Reserved | undefined> => {
    const addr = bigIntToAddr(n, set.family);
    if (!(await call(`reserve ${addr} in ${o.label}`, () => port.reserve(addr, owner)))) return undefined;
    try {
      await port.setCursor(addr);
    } catch (err) {
      await port.release(addr).catch((undoErr: unknown) => {
        throw new TsnetError('INTERNAL', `ipam: save cursor of ${o.label} failed (${err instanceof Error ? err.message : String(err)}); undoing the reservation of ${addr} failed too (${undoErr instanceof Error ? undoErr.message : String(undoErr)}); gc will free it`, { cause: new AggregateError([err, undoErr]) });
      });
      throw wrap(`ipam: save cursor of ${o.label} (reservation of ${addr} undone)`, err);
    }
    return { addr, range };
  };
  const after = cursorNumber(set, await call(`read cursor of ${o.label}`, () => port.getCursor()));

  // Fast path: with round robin the addresses after the cursor are usually free.
  const taken = new Set<bigint>();
  const order = candidates(set, after);
  for (const c of order) {
    const got = await tryReserve(c.n, c.range);
    if (got !== undefined) return got;
    taken.add(c.n);
    if (taken.size >= FAST_TRIES) break;
  }
  if (BigInt(taken.size) >= cap) throw o.exhausted(cap);

  // Slow path: list once, count (exhaustion without iterating), then skip what is taken.
  for (const r of await call(`list ${o.label}`, () => port.list())) {
    if (addrFamily(r.addr) !== set.family) continue;
    const n = addrToBigInt(r.addr);
    const range = rangeOf(set, n);
    if (range !== undefined && !range.excluded.has(n)) taken.add(n);
  }
  if (BigInt(taken.size) >= cap) throw o.exhausted(cap);
  let lost = 0;
  for (const c of candidates(set, after)) {
    if (taken.has(c.n)) continue;
    const got = await tryReserve(c.n, c.range);
    if (got !== undefined) return got;
    taken.add(c.n); // lost a race with a concurrent request
    if (BigInt(taken.size) >= cap) break;
    if (++lost > maxLost) {
      throw new TsnetError('EXHAUSTED', `ipam: no address reserved in ${o.label}: ${lost} candidates were taken by concurrent requests; try again`, { details: { lostRaces: lost } });
    }
  }
  throw o.exhausted(cap);
}

export interface StaticOptions {
  readonly label: string;
  /** The error for an address someone else holds (`by`: owner, "the gateway", "aux-address X"). */
  readonly inUse: (by: string) => TsnetError;
  /** The error for an address outside every range of the set. */
  readonly outside: () => TsnetError;
  /** Names of excluded addresses, for the message ("the gateway", "aux-address db"). */
  readonly excludedName?: (n: bigint) => string;
}

/**
 * Reserves exactly `ip` for `owner`: idempotent when `owner` already holds it. (A CNM network passes
 * its whole subnet as the set: a static --ip may lie outside the ip-range.)
 */
export async function reserveStatic(set: RangeSet, port: ReservationPort, ip: IpAddr, owner: string, o: StaticOptions): Promise<Reserved> {
  const n = addrToBigInt(ip);
  const range = addrFamily(ip) === set.family ? rangeOf(set, n) : undefined;
  if (range === undefined) throw o.outside();
  if (range.excluded.has(n)) throw o.inUse(o.excludedName?.(n) ?? 'a reserved address');
  for (let attempt = 0; attempt < 3; attempt++) {
    if (await call(`reserve ${ip} in ${o.label}`, () => port.reserve(ip, owner))) return { addr: ip, range };
    const holder = (await call(`list ${o.label}`, () => port.list())).find((r) => r.addr === ip);
    if (holder?.owner === owner) return { addr: ip, range };
    if (holder !== undefined) throw o.inUse(holder.owner);
    // released between our reserve() and the listing: try again
  }
  throw o.inUse('concurrent requests (it was taken and released repeatedly)');
}
