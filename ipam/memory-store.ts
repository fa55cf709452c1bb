/**
 * In-memory IpamStore for tests and single-process tools. Every method yields to the event loop
 * before it acts (so concurrent callers really interleave, as separate processes would), then acts
 * atomically, which is exactly the guarantee the on-disk store gives: `reserve` is an exclusive
 * create. Records are copied in and out, so callers cannot mutate stored state.
 */
import { TsnetError } from '../core/errors.js';
import { KeyedMutex } from '../core/keyed-mutex.js';
import type { IpAddr } from '../core/net.js';
import type { IpamStore, PoolId, PoolRecord, Reservation } from './api.js';

export interface MemoryIpamStoreOptions {
  /** Called before every operation; default: wait for the next turn of the event loop. */
  readonly yieldTo?: () => Promise<void>;
}

interface PoolState {
  readonly record: PoolRecord;
  readonly reserved: Map<IpAddr, string>;
  cursor: IpAddr | undefined;
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export function createMemoryIpamStore(opts: MemoryIpamStoreOptions = {}): IpamStore {
  const pools = new Map<PoolId, PoolState>();
  const lock = new KeyedMutex();
  const tick = opts.yieldTo ?? nextTurn;
  const copy = (r: PoolRecord): PoolRecord => structuredClone(r);

  return {
    async listPools() {
      await tick();
      return [...pools.values()].map((p) => copy(p.record));
    },
    async getPool(poolId) {
      await tick();
      const p = pools.get(poolId);
      return p === undefined ? undefined : copy(p.record);
    },
    async createPool(rec) {
      await tick();
      if (pools.has(rec.poolId)) throw new TsnetError('ALREADY_EXISTS', `pool ${rec.poolId} already exists`, { details: { poolId: rec.poolId } });
      pools.set(rec.poolId, { record: copy(rec), reserved: new Map(), cursor: undefined });
    },
    async deletePool(poolId) {
      await tick();
      pools.delete(poolId);
    },
    async reserve(poolId, addr, owner) {
      await tick();
      const p = pools.get(poolId);
      if (p === undefined) throw new TsnetError('NOT_FOUND', `pool ${poolId} does not exist`, { details: { poolId } });
      if (p.reserved.has(addr)) return false;
      p.reserved.set(addr, owner);
      return true;
    },
    async release(poolId, addr) {
      await tick();
      pools.get(poolId)?.reserved.delete(addr);
    },
    async listReserved(poolId) {
      await tick();
      const p = pools.get(poolId);
      return p === undefined ? [] : [...p.reserved].map(([addr, owner]): Reservation => ({ addr, owner }));
    },
    async holder(poolId, addr) {
      await tick();
      return pools.get(poolId)?.reserved.get(addr);
    },
    async releaseHeld(poolId, addr, owner) {
      await tick();
      const p = pools.get(poolId);
      if (p?.reserved.get(addr) !== owner) return false;
      p.reserved.delete(addr);
      return true;
    },
    async getCursor(poolId) {
      await tick();
      return pools.get(poolId)?.cursor;
    },
    async setCursor(poolId, addr) {
      await tick();
      const p = pools.get(poolId);
      if (p === undefined) throw new TsnetError('NOT_FOUND', `pool ${poolId} does not exist`, { details: { poolId } });
      p.cursor = addr;
    },
    withPoolLock(fn) {
      return lock.run('pools', fn);
    },
  };
}
