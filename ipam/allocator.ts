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
import { reserveNext as reserveNextIn, reserveStatic as reserveStaticIn, type RangeSet, type ReservationPort } from './range-set.js';
import { addrToBigInt, prefixRange, rangeSize } from './ranges.js';

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

/**
 * A pool as a range set of one range: its ip-range (dynamic) or its whole subnet (static --ip), the
 * network address, the broadcast address, the gateway and the aux addresses excluded.
 */
export function poolSet(pool: PoolRecord, dynamic: boolean): RangeSet {
  const cap = capacity(pool.subnet, dynamic ? pool.ipRange : undefined, pool.gateway, Object.values(pool.auxAddresses));
  const range = cap.range;
  return {
    family: pool.family,
    ranges: range === undefined ? [] : [{ subnet: pool.subnet, first: range.first, last: range.last, gateway: pool.gateway, excluded: cap.excluded }],
  };
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

  /** The pool's reservations in the store, as the range-set allocator's port. */
  const portOf = (pool: PoolRecord): ReservationPort => ({
    reserve: (addr, owner) => store.reserve(pool.poolId, addr, owner),
    release: (addr) => store.release(pool.poolId, addr),
    list: () => store.listReserved(pool.poolId),
    getCursor: () => store.getCursor(pool.poolId),
    setCursor: (addr) => store.setCursor(pool.poolId, addr),
  });

  const reserveStatic = async (pool: PoolRecord, ip: IpAddr, owner: string): Promise<Allocation> => {
    const why = hostAddrProblem(pool.subnet, ip);
    if (why !== undefined) {
      throw invalid('ip', ip, `ip ${ip} ${why} of network ${JSON.stringify(pool.networkName)}; choose a host address inside the subnet`);
    }
    const inUse = (by: string): TsnetError =>
      new TsnetError('ALREADY_EXISTS', `address ${ip} on network ${JSON.stringify(pool.networkName)} is in use by ${by}; choose another --ip or free that address`, {
        details: { field: 'ip', value: ip, owner: by },
      });
    const aux = new Map(Object.entries(pool.auxAddresses).map(([k, a]) => [addrToBigInt(a), `aux-address ${k}`] as const));
    const gw = addrToBigInt(pool.gateway);
    const got = await reserveStaticIn(poolSet(pool, false), portOf(pool), ip, owner, {
      label: `pool ${pool.poolId}`,
      inUse,
      outside: () => invalid('ip', ip, `ip ${ip} is outside subnet ${pool.subnet} of network ${JSON.stringify(pool.networkName)}`),
      excludedName: (n) => (n === gw ? 'the gateway' : (aux.get(n) ?? 'a reserved address')),
    });
    return toAllocation(pool, got.addr, owner);
  };

  const reserveNext = async (pool: PoolRecord, owner: string): Promise<Allocation> => {
    const got = await reserveNextIn(poolSet(pool, true), portOf(pool), owner, {
      label: `pool ${pool.poolId}`,
      exhausted: (free) => exhaustedError(pool, free),
      maxLostRaces: maxLost,
    });
    return toAllocation(pool, got.addr, owner);
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
      // One lookup, never a listing: an endpoint's teardown releases the addresses it recorded.
      if (owner !== undefined) return call(`release ${ip} in pool ${poolId}`, () => store.releaseHeld(poolId, ip, owner));
      if ((await call(`read ${ip} in pool ${poolId}`, () => store.holder(poolId, ip))) === undefined) return false;
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
