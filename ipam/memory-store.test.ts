/**
 * The IpamStore contract, run here against the in-memory store. `ipamStoreContract` is exported so
 * the on-disk adapter can be run through the very same suite (test/contracts/).
 */
import t, { type Test } from 'tap';
import { parseIpAddr, parseNetworkId } from '../core/net.js';
import type { IpamStore, PoolRecord } from './api.js';
import { createMemoryIpamStore } from './memory-store.js';
import { buildPoolRecord, validatePoolRequest } from './pools.js';

function rec(networkId: string, subnet: string): PoolRecord {
  const v = validatePoolRequest({ networkId: parseNetworkId(networkId), subnet });
  return buildPoolRecord(v, v.subnet!, 'user');
}

export async function ipamStoreContract(t: Test, make: () => Promise<IpamStore> | IpamStore): Promise<void> {
  const a1 = parseIpAddr('10.1.0.2');
  const a2 = parseIpAddr('10.1.0.3');

  await t.test('pools: create, get, list, duplicate, delete (idempotent, takes reservations and cursor along)', async (t) => {
    const s = await make();
    const p = rec('n1', '10.1.0.0/24');
    t.same(await s.listPools(), []);
    t.equal(await s.getPool(p.poolId), undefined);
    await s.createPool(p);
    t.same(await s.getPool(p.poolId), p);
    t.same(await s.listPools(), [p]);
    await t.rejects(s.createPool(p), { code: 'ALREADY_EXISTS' });
    t.equal(await s.reserve(p.poolId, a1, 'o1'), true);
    await s.setCursor(p.poolId, a1);
    await s.deletePool(p.poolId);
    await s.deletePool(p.poolId);
    t.same(await s.listPools(), []);
    t.same(await s.listReserved(p.poolId), [], 'no reservations of a deleted pool');
    await s.createPool(p);
    t.same(await s.listReserved(p.poolId), [], 'a recreated pool starts empty');
    t.equal(await s.getCursor(p.poolId), undefined, 'and without a cursor');
  });

  await t.test('records are copies: mutating a returned record changes nothing', async (t) => {
    const s = await make();
    const p = rec('n1', '10.1.0.0/24');
    await s.createPool(p);
    const got = (await s.getPool(p.poolId)) as { auxAddresses: Record<string, string> };
    got.auxAddresses['x'] = '10.1.0.9';
    t.same((await s.getPool(p.poolId))?.auxAddresses, {});
  });

  await t.test('reserve is exclusive, release idempotent, cursor round trips', async (t) => {
    const s = await make();
    const p = rec('n1', '10.1.0.0/24');
    await s.createPool(p);
    t.equal(await s.reserve(p.poolId, a1, 'o1'), true);
    t.equal(await s.reserve(p.poolId, a1, 'o2'), false, 'second reserve of the same address fails');
    t.equal(await s.reserve(p.poolId, a2, 'o2'), true);
    t.same((await s.listReserved(p.poolId)).sort((x, y) => x.addr.localeCompare(y.addr)), [
      { addr: a1, owner: 'o1' },
      { addr: a2, owner: 'o2' },
    ]);
    await s.release(p.poolId, a1);
    await s.release(p.poolId, a1);
    await s.release(rec('gone', '10.9.0.0/24').poolId, a1);
    t.same(await s.listReserved(p.poolId), [{ addr: a2, owner: 'o2' }]);
    t.equal(await s.reserve(p.poolId, a1, 'o3'), true, 'a released address can be reserved again');
    t.equal(await s.holder(p.poolId, a1), 'o3', 'holder: one lookup');
    t.equal(await s.holder(p.poolId, parseIpAddr('10.1.0.99')), undefined);
    t.equal(await s.releaseHeld(p.poolId, a1, 'o2'), false, 'releaseHeld refuses another owner');
    t.equal(await s.holder(p.poolId, a1), 'o3', 'and keeps the reservation');
    t.equal(await s.releaseHeld(p.poolId, a1, 'o3'), true, 'releaseHeld frees the owner\'s address');
    t.equal(await s.releaseHeld(p.poolId, a1, 'o3'), false, 'once');
    t.equal(await s.getCursor(p.poolId), undefined);
    await s.setCursor(p.poolId, a2);
    t.equal(await s.getCursor(p.poolId), a2);
  });

  await t.test('concurrent reserves of one address: exactly one wins', async (t) => {
    const s = await make();
    const p = rec('n1', '10.1.0.0/24');
    await s.createPool(p);
    const wins = await Promise.all(Array.from({ length: 50 }, (_, i) => s.reserve(p.poolId, a1, `o${i}`)));
    t.equal(wins.filter(Boolean).length, 1);
    const owner = (await s.listReserved(p.poolId))[0]?.owner;
    t.equal(owner, `o${wins.indexOf(true)}`, 'the winner is recorded as the owner');
  });

  await t.test('withPoolLock serializes its critical sections', async (t) => {
    const s = await make();
    let inside = 0;
    let maxInside = 0;
    const order: number[] = [];
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        s.withPoolLock(async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          await new Promise((r) => setTimeout(r, 2));
          order.push(i);
          inside--;
          return i;
        }),
      ),
    );
    t.equal(maxInside, 1, 'never two holders at once');
    t.equal(order.length, 10);
    await t.rejects(s.withPoolLock(() => Promise.reject(new Error('boom'))), /boom/, 'errors pass through');
    t.equal(await s.withPoolLock(async () => 42), 42, 'the lock is free again after a failure');
  });
}

t.test('memory store satisfies the IpamStore contract', async (t) => {
  await ipamStoreContract(t, () => createMemoryIpamStore());
});

t.test('memory store: reserve in a pool that does not exist is NOT_FOUND', async (t) => {
  const s = createMemoryIpamStore();
  await t.rejects(s.reserve(rec('x', '10.1.0.0/24').poolId, parseIpAddr('10.1.0.2'), 'o'), { code: 'NOT_FOUND' });
});

t.test('memory store: operations interleave (each yields before acting)', async (t) => {
  const log: string[] = [];
  let n = 0;
  const s = createMemoryIpamStore({
    yieldTo: async () => {
      log.push(`yield${n++}`);
      await new Promise((r) => setImmediate(r));
    },
  });
  await Promise.all([s.listPools(), s.listPools()]);
  t.same(log, ['yield0', 'yield1'], 'every operation goes through yieldTo');
});
