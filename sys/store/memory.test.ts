import t from 'tap';
import { z } from 'zod';
import { TsnetError } from '../../core/errors.js';
import { storeContract } from '../../test/contracts/store.js';
import { createMemoryStore } from './memory.js';

storeContract(t, {
  async open() {
    const store = createMemoryStore();
    return {
      store,
      writeRaw: async (collection, id, text) => store.writeRaw(collection, id, text),
      pathOf: (collection, id) => `memory:${collection}/${id}.json`,
      close: async () => undefined,
    };
  },
});

const Spec = { name: 'things', version: 1, schema: z.strictObject({ v: z.number() }) };

t.test('failNext: the next call of that op rejects before any effect, once per injection', async (t) => {
  const store = createMemoryStore();
  const things = store.collection(Spec);
  await things.create('a', { v: 1 });
  const boom = new TsnetError('UNAVAILABLE', 'disk gone');
  store.failNext('update', boom);
  await t.rejects(things.update('a', () => ({ v: 2 })), boom);
  t.same(await things.get('a'), { v: 1 }, 'nothing changed');
  t.same(await things.update('a', () => ({ v: 3 })), { v: 3 }, 'only the next call fails');
  store.failNext('put', new Error('p1'));
  store.failNext('put', new Error('p2'));
  await t.rejects(things.put('b', { v: 0 }), { message: 'p1' });
  await t.rejects(things.put('b', { v: 0 }), { message: 'p2' }, 'injections queue');
  t.equal(await things.get('b'), undefined);
  store.failNext('get', new Error('g'));
  await t.rejects(things.get('a'), { message: 'g' });
  store.failNext('list', new Error('l'));
  await t.rejects(things.list(), { message: 'l' });
  store.failNext('delete', new Error('d'));
  await t.rejects(things.delete('a'), { message: 'd' });
  t.same(await things.get('a'), { v: 3 });
  store.failNext('create', new Error('c'));
  await t.rejects(things.create('c', { v: 1 }), { message: 'c' });
  store.failNext('upsert', new Error('u'));
  await t.rejects(things.upsert('c', () => ({ v: 1 })), { message: 'u' });
  t.equal(await things.get('c'), undefined);
  const r = store.reservations('pool');
  store.failNext('reserve', new Error('r'));
  await t.rejects(r.reserve('k', 'o'), { message: 'r' });
  t.same(await r.list(), [], 'failed reserve took nothing');
  await r.reserve('k', 'o');
  store.failNext('release', new Error('rel'));
  await t.rejects(r.release('k'), { message: 'rel' });
  t.equal(await r.owner('k'), 'o');
  store.failNext('owner', new Error('ow'));
  await t.rejects(r.owner('k'), { message: 'ow' });
  store.failNext('listReservations', new Error('lr'));
  await t.rejects(r.list(), { message: 'lr' });
  store.failNext('releaseOwner', new Error('ro'));
  await t.rejects(r.releaseOwner('o'), { message: 'ro' });
  store.failNext('lock', new Error('lk'));
  let ran = false;
  await t.rejects(store.withLock('x', async () => (ran = true)), { message: 'lk' });
  t.equal(ran, false, 'failed lock did not run fn');
});

t.test('writeRaw/readRaw expose the stored envelope', async (t) => {
  const store = createMemoryStore();
  await store.collection(Spec).put('a', { v: 7 });
  t.same(JSON.parse(store.readRaw('things', 'a') ?? ''), { schemaVersion: 1, id: 'a', record: { v: 7 } });
  t.equal(store.readRaw('things', 'zz'), undefined);
  t.throws(() => store.writeRaw('things', '../x', '{}'), { code: 'INVALID_CONFIG' });
  t.equal(store.location, 'memory:');
});
