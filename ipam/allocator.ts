/**
 * The IPAM implementation: pure logic over an IpamStore. Pools are created and deleted under the
 * store's pool lock; addresses are reserved without any lock, `store.reserve()` (an exclusive
 * create) being the arbiter between concurrent requests in any number of processes.
 *
 * Dynamic allocation is round robin like CNI host-local: the search starts after the pool's cursor
 * (the address handed out last) and wraps around, so a released address is reused last. The common
 * case costs one cursor read, one reserve and one cursor write; only when the addresses after the
 * cursor are taken is the pool listed once. Work is then bounded by the number of reserved and
 * excluded addresses plus lost races, never by the size of the subnet: an IPv6 /64 is never
 * iterated, and exhaustion is detected by counting. A failed cursor write undoes the reservation.
 */
import { TsnetError, wrap } from '../core/errors.js';
import type { Family, IpAddr, NetworkId, Prefix } from '../core/net.js';
import { addrFamily, makePrefix, parseIpAddr, prefixLen } from '../core/net.js';
import type { Allocation, DefaultPool, Ipam, IpamStore, PoolId, PoolRecord, Released, Reservation } from './api.js';
import { parseOwner, poolIdFor } from './api.js';
import {
  buildPoolRecord, capacity, conflictError, defaultPoolsExhausted, findConflict, hostAddrProblem, pickDefaultSubnet,
  resolveDefaultPools, validatePoolRequest,
} from './pools.js';
import { addrToBigInt, bigIntToAddr, prefixRange, rangeContains, rangeSize } from './ranges.js';

export interface IpamDeps {
  readonly store: IpamStore;
  /**
   * The host's routes (main table, both families). Default pools skip every subnet that overlaps one,
   * and a --subnet that overlaps one is refused. Default routes (/0) are ignored.
   */
  readonly hostRoutes: () => Promise<readonly Prefix[]>;
  /** Stable per-host id (engine or machine id) from which the IPv6 ULA /48 is derived. */
  readonly ulaSeed: string;
  /** Where default subnets come from; default DEFAULT_IPV4_POOLS plus the ULA /48 in /64s. */
  readonly defaultPools?: readonly DefaultPool[];
  /** How many addresses one request may lose to concurrent requests before giving up (default 4096). */
  readonly maxLostRaces?: number;
}

const FAMILIES: readonly Family[] = [4, 6];
/** Addresses tried after the cursor before the pool is listed. */
const FAST_TRIES = 8;

function invalid(field: string, value: unknown, message: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', message, { details: { field, value } });
}

function toAllocation(pool: PoolRecord, ip: IpAddr, owner: string): Allocation {
  return {
    networkId: pool.networkId,
    poolId: pool.poolId,
    family: pool.family,
    ip,
    address: makePrefix(ip, prefixLen(pool.subnet)),
    subnet: pool.subnet,
    gateway: pool.gateway,
    owner,
  };
}

function exhaustedError(pool: PoolRecord, free: bigint): TsnetError {
  const where = pool.ipRange !== undefined ? `ip-range ${pool.ipRange} of subnet ${pool.subnet}` : `subnet ${pool.subnet}`;
  const size = rangeSize(prefixRange(pool.ipRange ?? pool.subnet));
  const aux = Object.keys(pool.auxAddresses).length;
  const never = `the network address${pool.family === 4 ? ', the broadcast address' : ''}, the gateway${aux > 0 ? ` and ${aux} aux address${aux === 1 ? '' : 'es'}` : ''}`;
  return new TsnetError(
    'EXHAUSTED',
    `no free address in ${where} of network ${JSON.stringify(pool.networkName)}: all ${free} addresses that can be handed out are in use ` +
      `(${size} addresses in the ${pool.ipRange !== undefined ? 'ip-range' : 'subnet'}; ${never} are never handed out); ` +
      `release addresses or recreate the network with a larger ${pool.ipRange !== undefined ? '--ip-range' : '--subnet'}`,
    {
      details: {
        networkId: pool.networkId,
        subnet: pool.subnet,
        ...(pool.ipRange !== undefined ? { ipRange: pool.ipRange } : {}),
        capacity: free.toString(),
      },
    },
  );
}

/** Cursor as a number inside `range`, or undefined if absent, malformed or outside. */
function cursorIn(cursor: IpAddr | undefined, family: Family, first: bigint, last: bigint): bigint | undefined {
  if (cursor === undefined) return undefined;
  try {
    if (addrFamily(cursor) !== family) return undefined;
    const n = addrToBigInt(cursor);
    return n >= first && n <= last ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Builds the IPAM over a store. Validates `defaultPools` and `ulaSeed` now (INVALID_CONFIG, field
 * 'default-address-pools' or 'ula-seed').
 */
export function createIpam(deps: IpamDeps): Ipam {
  const { store } = deps;
  const defaults = resolveDefaultPools(deps.defaultPools, deps.ulaSeed);
  const maxLost = deps.maxLostRaces ?? 4096;

  /** Every store call goes through here: failures become TsnetErrors with context, codes kept. */
  const call = async <T>(context: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw wrap(`ipam: ${context}`, err);
    }
  };
  /** The pool lock; errors of `fn` (already TsnetErrors) pass unchanged. */
  const locked = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await store.withPoolLock(fn);
    } catch (err) {
      throw err instanceof TsnetError ? err : wrap('ipam: pool lock', err);
    }
  };

  const loadPool = async (networkId: NetworkId, family: Family): Promise<PoolRecord> => {
    const poolId = poolIdFor(networkId, family);
    const pool = await call(`read pool ${poolId}`, () => store.getPool(poolId));
    if (pool === undefined) {
      throw new TsnetError('NOT_FOUND', `network ${networkId} has no IPv${family} address pool${family === 6 ? ' (create the network with IPv6 enabled)' : ''}`, {
        details: { networkId, family },
      });
    }
    return pool;
  };

  const getPools = async (networkId: NetworkId): Promise<PoolRecord[]> => {
    const found = await Promise.all(FAMILIES.map((f) => call(`read pool ${poolIdFor(networkId, f)}`, () => store.getPool(poolIdFor(networkId, f)))));
    return found.filter((p): p is PoolRecord => p !== undefined);
  };

  /** Saves the cursor after a reservation; if that fails the reservation is undone. */
  const commitCursor = async (pool: PoolRecord, addr: IpAddr): Promise<void> => {
    try {
      await store.setCursor(pool.poolId, addr);
    } catch (err) {
      try {
        await store.release(pool.poolId, addr);
      } catch (undoErr) {
        const e = wrap(`ipam: save cursor of pool ${pool.poolId}`, err);
        throw new TsnetError(
          e.code,
          `${e.message}; undoing the reservation of ${addr} failed too (${undoErr instanceof Error ? undoErr.message : String(undoErr)}); gc will free it`,
          { cause: new AggregateError([err, undoErr]), details: { poolId: pool.poolId, addr } },
        );
      }
      throw wrap(`ipam: save cursor of pool ${pool.poolId} (reservation of ${addr} undone)`, err);
    }
  };

  const reserveStatic = async (pool: PoolRecord, ip: IpAddr, owner: string): Promise<Allocation> => {
    const why = hostAddrProblem(pool.subnet, ip);
    if (why !== undefined) {
      throw invalid('ip', ip, `ip ${ip} ${why} of network ${JSON.stringify(pool.networkName)}; choose a host address inside the subnet`);
    }
    const inUse = (by: string): TsnetError =>
      new TsnetError('ALREADY_EXISTS', `address ${ip} on network ${JSON.stringify(pool.networkName)} is in use by ${by}; choose another --ip or free that address`, {
        details: { field: 'ip', value: ip, owner: by },
      });
    if (ip === pool.gateway) throw inUse('the gateway');
    const aux = Object.entries(pool.auxAddresses).find(([, a]) => a === ip);
    if (aux !== undefined) throw inUse(`aux-address ${aux[0]}`);
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await call(`reserve ${ip} in pool ${pool.poolId}`, () => store.reserve(pool.poolId, ip, owner))) return toAllocation(pool, ip, owner);
      const holder = (await call(`list pool ${pool.poolId}`, () => store.listReserved(pool.poolId))).find((r) => r.addr === ip);
      if (holder?.owner === owner) return toAllocation(pool, ip, owner);
      if (holder !== undefined) throw inUse(holder.owner);
      // released between our reserve() and the listing: try again
    }
    throw inUse('concurrent requests (it was taken and released repeatedly)');
  };

  const reserveNext = async (pool: PoolRecord, owner: string): Promise<Allocation> => {
    const cap = capacity(pool.subnet, pool.ipRange, pool.gateway, Object.values(pool.auxAddresses));
    const range = cap.range;
    if (range === undefined || cap.free <= 0n) throw exhaustedError(pool, 0n);
    const total = rangeSize(range);
    const next = (n: bigint): bigint => (n === range.last ? range.first : n + 1n);
    /** Reserves `n` and moves the cursor there; false if someone holds it. */
    const tryReserve = async (n: bigint): Promise<Allocation | undefined> => {
      const addr = bigIntToAddr(n, pool.family);
      if (!(await call(`reserve ${addr} in pool ${pool.poolId}`, () => store.reserve(pool.poolId, addr, owner)))) return undefined;
      await commitCursor(pool, addr);
      return toAllocation(pool, addr, owner);
    };

    const cursor = cursorIn(await call(`read cursor of pool ${pool.poolId}`, () => store.getCursor(pool.poolId)), pool.family, range.first, range.last);
    let cand = cursor === undefined ? range.first : next(cursor);

    // Fast path: with round robin the addresses after the cursor are usually free, so try a few in
    // order without listing the pool (common case: one read, one exclusive create, one write).
    const taken = new Set<bigint>();
    for (let visited = 0n; visited < total && taken.size < FAST_TRIES; visited++, cand = next(cand)) {
      if (cap.excluded.has(cand)) continue;
      const got = await tryReserve(cand);
      if (got !== undefined) return got;
      taken.add(cand);
    }

    // Slow path: list the pool once, count (exhaustion without iterating), then skip what is taken.
    const reserved = await call(`list pool ${pool.poolId}`, () => store.listReserved(pool.poolId));
    for (const r of reserved) {
      if (addrFamily(r.addr) !== pool.family) continue;
      const n = addrToBigInt(r.addr);
      if (rangeContains(range, n) && !cap.excluded.has(n)) taken.add(n);
    }
    if (BigInt(taken.size) >= cap.free) throw exhaustedError(pool, cap.free);
    let lost = 0;
    for (let visited = 0n; visited < total; visited++, cand = next(cand)) {
      if (taken.has(cand) || cap.excluded.has(cand)) continue;
      const got = await tryReserve(cand);
      if (got !== undefined) return got;
      taken.add(cand); // lost a race with a concurrent request
      if (BigInt(taken.size) >= cap.free) break;
      if (++lost > maxLost) {
        throw new TsnetError(
          'EXHAUSTED',
          `no address reserved in subnet ${pool.subnet} of network ${JSON.stringify(pool.networkName)}: ${lost} candidates were taken by concurrent requests; try again`,
          { details: { networkId: pool.networkId, subnet: pool.subnet, lostRaces: lost } },
        );
      }
    }
    throw exhaustedError(pool, cap.free);
  };

  /** Frees every reservation whose owner matches; goes on after failures and reports them together. */
  const releaseWhere = async (context: string, match: (owner: string) => boolean, networkId: NetworkId | undefined): Promise<Released[]> => {
    const pools: { poolId: PoolId; networkId: NetworkId }[] =
      networkId !== undefined
        ? FAMILIES.map((f) => ({ poolId: poolIdFor(networkId, f), networkId }))
        : (await call('list pools', () => store.listPools())).map((p) => ({ poolId: p.poolId, networkId: p.networkId }));
    const released: Released[] = [];
    const errors: TsnetError[] = [];
    for (const p of pools) {
      let reserved: Reservation[];
      try {
        reserved = await store.listReserved(p.poolId);
      } catch (err) {
        errors.push(wrap(`list pool ${p.poolId}`, err));
        continue;
      }
      for (const r of reserved) {
        if (!match(r.owner)) continue;
        try {
          await store.release(p.poolId, r.addr);
          released.push({ networkId: p.networkId, poolId: p.poolId, addr: r.addr, owner: r.owner });
        } catch (err) {
          errors.push(wrap(`release ${r.addr} in pool ${p.poolId}`, err));
        }
      }
    }
    if (errors.length > 0) {
      throw new TsnetError(
        errors[0]?.code ?? 'INTERNAL',
        `ipam: ${context}: ${errors.length} step${errors.length === 1 ? '' : 's'} failed (${released.length} released): ${errors.map((e) => e.message).join('; ')}`,
        { cause: new AggregateError(errors), details: { released } },
      );
    }
    return released;
  };

  return {
    async requestPool(req) {
      const v = validatePoolRequest(req);
      let routes: readonly Prefix[];
      try {
        routes = await deps.hostRoutes();
      } catch (err) {
        throw wrap('ipam: read host routes', err);
      }
      return locked(async () => {
        const pools = await call('list pools', () => store.listPools());
        const poolId = poolIdFor(v.networkId, v.family);
        const existing = pools.find((p) => p.poolId === poolId);
        if (existing !== undefined) {
          throw new TsnetError(
            'ALREADY_EXISTS',
            `network ${JSON.stringify(existing.networkName)} already has an IPv${v.family} pool (${existing.subnet}); release it before requesting another`,
            { details: { networkId: v.networkId, family: v.family, subnet: existing.subnet } },
          );
        }
        let rec: PoolRecord;
        if (v.subnet !== undefined) {
          const conflict = findConflict(v.subnet, pools, routes);
          if (conflict !== undefined) throw conflictError(v.subnet, conflict);
          rec = buildPoolRecord(v, v.subnet, 'user');
        } else {
          const subnet = pickDefaultSubnet(v.family, defaults, pools, routes);
          if (subnet === undefined) throw defaultPoolsExhausted(v.family, defaults);
          rec = buildPoolRecord(v, subnet, 'default');
        }
        await call(`create pool ${rec.poolId} (${rec.subnet})`, () => store.createPool(rec));
        return rec;
      });
    },

    async releasePool(networkId) {
      await locked(async () => {
        for (const f of FAMILIES) await call(`delete pool ${poolIdFor(networkId, f)}`, () => store.deletePool(poolIdFor(networkId, f)));
      });
    },

    getPools,

    async listPools() {
      const pools = await call('list pools', () => store.listPools());
      return [...pools].sort((a, b) => (a.networkId < b.networkId ? -1 : a.networkId > b.networkId ? 1 : a.family - b.family));
    },

    async requestAddress(req) {
      const owner = parseOwner(req.owner);
      if (req.family !== undefined && req.family !== 4 && req.family !== 6) {
        throw invalid('family', req.family, `family: must be 4 or 6, got ${JSON.stringify(req.family)}`);
      }
      const ip = req.ip !== undefined ? parseIpAddr(req.ip, 'ip') : undefined;
      const family = ip !== undefined ? addrFamily(ip) : (req.family ?? 4);
      if (req.family !== undefined && req.family !== family) {
        throw invalid('ip', req.ip, `ip ${ip} is an IPv${family} address but an IPv${req.family} address was requested`);
      }
      const pool = await loadPool(req.networkId, family);
      return ip !== undefined ? reserveStatic(pool, ip, owner) : reserveNext(pool, owner);
    },

    async releaseAddress(req) {
      const ip = parseIpAddr(req.addr, 'ip');
      const owner = req.owner !== undefined ? parseOwner(req.owner) : undefined;
      const poolId = poolIdFor(req.networkId, addrFamily(ip));
      const holder = (await call(`list pool ${poolId}`, () => store.listReserved(poolId))).find((r) => r.addr === ip);
      if (holder === undefined || (owner !== undefined && holder.owner !== owner)) return false;
      await call(`release ${ip} in pool ${poolId}`, () => store.release(poolId, ip));
      return true;
    },

    async releaseOwner(owner, opts = {}) {
      const o = parseOwner(owner);
      return releaseWhere(`release addresses of ${o}`, (x) => x === o, opts.networkId);
    },

    async gc(opts) {
      return releaseWhere('gc', (owner) => !opts.keep(owner), opts.networkId);
    },

    async listAddresses(networkId) {
      const out: Allocation[] = [];
      for (const pool of await getPools(networkId)) {
        const reserved = await call(`list pool ${pool.poolId}`, () => store.listReserved(pool.poolId));
        const sorted = reserved
          .map((r) => ({ r, n: addrToBigInt(r.addr) }))
          .sort((a, b) => (a.n < b.n ? -1 : a.n > b.n ? 1 : 0));
        for (const { r } of sorted) out.push(toAllocation(pool, r.addr, r.owner));
      }
      return out;
    },
  };
}
