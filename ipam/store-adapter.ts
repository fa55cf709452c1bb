/**
 * IpamStore over the embedded store (sys/store): pool records in one collection, one reservation
 * pool per IPAM pool (one file per address, created exclusively: the arbiter between processes),
 * round-robin cursors in another collection, and the pool lock as a store lock.
 */
import { z } from 'zod';
import { TsnetError } from '../core/errors.js';
import { parseIpAddr, type IpAddr } from '../core/net.js';
import type { Reservations, Store } from '../sys/store/api.js';
import { PoolRecordSchema, type IpamStore, type PoolId, type PoolRecord } from './api.js';

const CursorSchema = z.strictObject({ cursor: z.string() });

/** Store names are at most 64 characters; a pool id is `<64-hex network id>-ipv4`. */
export function reservationPoolName(poolId: PoolId): string {
  const m = /^(.*)-ipv([46])$/.exec(poolId);
  if (!m) throw new TsnetError('INVALID_CONFIG', `pool id ${poolId}: malformed`);
  return `ip${m[2]}-${(m[1] ?? '').slice(0, 56)}`;
}

export function createStoreIpamStore(store: Store): IpamStore {
  const pools = store.collection<PoolRecord>({ name: 'ipam-pools', version: 1, schema: PoolRecordSchema as unknown as z.ZodType<PoolRecord> });
  const cursors = store.collection<{ cursor: string }>({ name: 'ipam-cursors', version: 1, schema: CursorSchema });
  const res = (poolId: PoolId): Reservations => store.reservations(reservationPoolName(poolId));
  const cursorId = (poolId: PoolId): string => reservationPoolName(poolId);
  return {
    async listPools() {
      const r = await pools.list();
      if (r.errors.length > 0) throw new TsnetError('INTERNAL', `ipam pools: ${r.errors.map((e) => e.message).join('; ')}`);
      return r.entries.map((e) => e.record);
    },
    getPool: (poolId) => pools.get(poolId),
    async createPool(rec) {
      if (await pools.get(rec.poolId)) throw new TsnetError('ALREADY_EXISTS', `ipam pool ${rec.poolId} exists`);
      // Start empty: leftovers of an earlier pool with the same id (a crash mid-delete) go first.
      await res(rec.poolId).releaseAll();
      await cursors.delete(cursorId(rec.poolId));
      await pools.create(rec.poolId, rec);
    },
    async deletePool(poolId) {
      await res(poolId).releaseAll();
      await cursors.delete(cursorId(poolId));
      await pools.delete(poolId);
    },
    reserve: (poolId, addr, owner) => res(poolId).reserve(addr, owner),
    async release(poolId, addr) {
      await res(poolId).release(addr);
    },
    async listReserved(poolId) {
      return (await res(poolId).list()).map((r) => ({ addr: parseIpAddr(r.key, 'reservation'), owner: r.owner }));
    },
    holder: (poolId, addr) => res(poolId).owner(addr),
    releaseHeld: (poolId, addr, owner) => res(poolId).release(addr, owner),
    async getCursor(poolId) {
      const c = await cursors.get(cursorId(poolId));
      return c === undefined ? undefined : (parseIpAddr(c.cursor, 'cursor') as IpAddr);
    },
    async setCursor(poolId, addr) {
      await cursors.put(cursorId(poolId), { cursor: addr });
    },
    withPoolLock: (fn) => store.withLock('ipam/pools', fn),
  };
}
