/**
 * The Store contract: one suite, run against the in-memory store (sys/store/memory.test.ts) and the
 * embedded fs store (sys/store/fs.test.ts). Whatever a caller may rely on is asserted here, so the
 * memory store cannot drift from the real one. Cross-process behaviour (50 writer processes, a
 * SIGKILLed lock holder, crash safety) is in test/integration/store-concurrency.test.ts.
 */
import type { Test } from 'tap';
import { z } from 'zod';
import { TsnetError } from '../../core/errors.js';
import type { RecordSpec, Store } from '../../sys/store/api.js';

export interface StoreUnderTest {
  readonly store: Store;
  /** Plants `text` as the stored form of collection/id, as a torn write or a hand edit would. */
  writeRaw(collection: string, id: string, text: string): Promise<void>;
  /** What error messages about that record must name (its file path). */
  pathOf(collection: string, id: string): string;
  close(): Promise<void>;
}

export interface StoreHarness {
  /** A fresh, empty store. */
  open(): Promise<StoreUnderTest>;
}

const NetSchema = z.strictObject({
  name: z.string().min(1),
  subnet: z.string(),
  labels: z.record(z.string(), z.string()).default({}),
});
type Net = z.infer<typeof NetSchema>;
const NETS: RecordSpec<Net> = { name: 'networks', version: 2, schema: NetSchema };
const COUNTER: RecordSpec<{ n: number }> = { name: 'counters', version: 1, schema: z.strictObject({ n: z.number().int() }) };

const net = (name: string, subnet = '10.0.0.0/24'): Net => ({ name, subnet, labels: {} });
const envelope = (id: string, record: unknown, schemaVersion = 2): string => JSON.stringify({ schemaVersion, id, record });
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

const BAD_IDS = ['', '.', '..', '../x', '.hidden', 'a/b', '/abs', 'a\0b', 'x'.repeat(201), 'sp ace', 'new\nline'];

export function storeContract(t: Test, h: StoreHarness): void {
  const test = (name: string, fn: (t: Test, s: StoreUnderTest) => Promise<void>): void => {
    t.test(name, async (t) => {
      const s = await h.open();
      try {
        await fn(t, s);
      } finally {
        await s.close();
      }
    });
  };

  test('list by id prefix reads only the matching records', async (t, { store }) => {
    const nets = store.collection(NETS);
    await nets.create('aa1', net('a1'));
    await nets.create('aa2', net('a2', '10.0.1.0/24'));
    await nets.create('ab1', net('b1', '10.0.2.0/24'));
    t.same((await nets.list({ prefix: 'aa' })).entries.map((e) => e.id), ['aa1', 'aa2']);
    t.same((await nets.list({ prefix: 'ab' })).entries.map((e) => e.id), ['ab1']);
    t.same((await nets.list({ prefix: 'zz' })).entries, []);
    t.equal((await nets.list()).entries.length, 3, 'no prefix: everything');
  });

  test('create, get, require, list, put, update, delete', async (t, { store }) => {
    const nets = store.collection(NETS);
    t.equal(nets.name, 'networks');
    t.equal(await nets.get('n1'), undefined, 'absent record reads as undefined');
    t.same(await nets.list(), { entries: [], errors: [] }, 'empty collection');
    const created = await nets.create('n1', { name: 'web', subnet: '10.0.0.0/24' } as Net);
    t.same(created, net('web'), 'create returns the parsed record (defaults applied)');
    t.same(await nets.get('n1'), net('web'));
    t.same(await nets.require('n1'), net('web'));
    await nets.create('n0', net('db', '10.0.1.0/24'));
    await nets.create('n2', net('cache', '10.0.2.0/24'));
    const l = await nets.list();
    t.same(l.errors, []);
    t.same(l.entries.map((e) => e.id), ['n0', 'n1', 'n2'], 'list is sorted by id');
    t.same(l.entries[0]?.record, net('db', '10.0.1.0/24'));
    t.same(await nets.put('n1', net('web2')), net('web2'), 'put replaces');
    t.same(await nets.get('n1'), net('web2'));
    t.same(await nets.put('n9', net('new')), net('new'), 'put creates');
    const up = await nets.update('n1', (cur) => ({ ...cur, labels: { a: 'b' } }));
    t.same(up, { ...net('web2'), labels: { a: 'b' } });
    t.same(await nets.get('n1'), up, 'update persisted');
    t.equal(await nets.delete('n1'), true, 'delete of an existing record: true');
    t.equal(await nets.delete('n1'), false, 'delete again: false, no error (idempotent)');
    t.equal(await nets.delete('never'), false, 'delete of a record that never existed');
    t.equal(await nets.get('n1'), undefined);
    t.same((await nets.list()).entries.map((e) => e.id), ['n0', 'n2', 'n9']);
  });

  test('records are copies: mutating a returned record changes nothing stored', async (t, { store }) => {
    const nets = store.collection(NETS);
    const rec = net('web');
    await nets.create('n1', rec);
    rec.labels['x'] = 'y';
    const got = await nets.require('n1');
    got.labels['z'] = 'w';
    t.same(await nets.get('n1'), net('web'));
  });

  test('ALREADY_EXISTS, NOT_FOUND', async (t, { store, writeRaw }) => {
    const nets = store.collection(NETS);
    await nets.create('n1', net('web'));
    await t.rejects(nets.create('n1', net('other')), { code: 'ALREADY_EXISTS' });
    t.same(await nets.get('n1'), net('web'), 'the failed create changed nothing');
    await writeRaw('networks', 'bad', '{"trunc');
    await t.rejects(nets.create('bad', net('x')), { code: 'ALREADY_EXISTS' }, 'a corrupt file also holds its id');
    await t.rejects(nets.require('nope'), { code: 'NOT_FOUND', message: /nope/ });
    await t.rejects(nets.update('nope', (c) => c), { code: 'NOT_FOUND' });
    t.equal(await nets.get('nope'), undefined, 'failed update created nothing');
    const made = await nets.upsert('nope', (cur) => (cur === undefined ? net('fresh') : { ...cur, name: 'again' }));
    t.same(made, net('fresh'), 'upsert creates when absent');
    t.same(await nets.upsert('nope', (cur) => (cur === undefined ? net('fresh') : { ...cur, name: 'again' })), { ...net('fresh'), name: 'again' }, 'upsert updates when present');
  });

  test('records are validated on write (INVALID_CONFIG, nothing written)', async (t, { store }) => {
    const nets = store.collection(NETS);
    const bad = { name: '', subnet: '10.0.0.0/24' } as Net;
    await t.rejects(nets.create('n1', bad), { code: 'INVALID_CONFIG', message: /networks\/n1/ });
    await t.rejects(nets.put('n1', { ...net('x'), extra: 1 } as Net), { code: 'INVALID_CONFIG' }, 'strict schema: unknown key');
    t.equal(await nets.get('n1'), undefined);
    await nets.create('n1', net('ok'));
    await t.rejects(nets.update('n1', () => bad), { code: 'INVALID_CONFIG' });
    t.same(await nets.get('n1'), net('ok'), 'an invalid update leaves the old record');
  });

  test('update is a read-modify-write: concurrent increments are not lost', async (t, { store }) => {
    const c = store.collection(COUNTER);
    await c.create('hits', { n: 0 });
    await Promise.all(
      Array.from({ length: 25 }, () =>
        c.update('hits', async (cur) => {
          await tick(); // yield inside the critical section
          return { n: cur.n + 1 };
        }),
      ),
    );
    t.same(await c.get('hits'), { n: 25 });
    await t.rejects(
      c.update('hits', () => {
        throw new TsnetError('EXHAUSTED', 'fn failed');
      }),
      { code: 'EXHAUSTED', message: 'fn failed' },
      'the callback error propagates unchanged',
    );
    t.same(await c.get('hits'), { n: 25 }, 'a failed update writes nothing');
    t.same(await c.update('hits', (cur) => ({ n: cur.n + 1 })), { n: 26 }, 'the record lock was released after the failure');
    const puts = await Promise.all([c.upsert('other', (cur) => ({ n: (cur?.n ?? 0) + 1 })), c.upsert('other', (cur) => ({ n: (cur?.n ?? 0) + 1 }))]);
    t.same(puts.map((p) => p.n).sort(), [1, 2], 'upserts of a new record serialize too');
  });

  test('schemaVersion: newer refused, older migrated or refused, all naming the file', async (t, { store, writeRaw, pathOf }) => {
    const nets = store.collection(NETS);
    await writeRaw('networks', 'future', envelope('future', net('f'), 3));
    const e1 = await nets.get('future').catch((e: unknown) => e);
    t.match(e1, { code: 'INTERNAL', details: { path: pathOf('networks', 'future'), problem: 'newer-version', schemaVersion: 3 } });
    t.match((e1 as Error).message, pathOf('networks', 'future'));
    t.match((e1 as Error).message, /newer tsnet/);
    await writeRaw('networks', 'past', envelope('past', { name: 'p', net: '10.9.0.0/16' }, 1));
    await t.rejects(nets.get('past'), { code: 'INTERNAL', details: { problem: 'older-version' } }, 'no migration: refused');
    const migrating = store.collection<Net>({
      ...NETS,
      migrate: (from, raw) => {
        if (from !== 1) throw new Error(`cannot migrate from ${from}`);
        const r = raw as { name: string; net: string };
        return { name: r.name, subnet: r.net };
      },
    });
    t.same(await migrating.get('past'), net('p', '10.9.0.0/16'), 'migrated on read');
    await migrating.update('past', (cur) => cur);
    t.same(await nets.get('past'), net('p', '10.9.0.0/16'), 'rewritten at the current version');
    await writeRaw('networks', 'zero', envelope('zero', net('z'), 0));
    await t.rejects(nets.get('zero'), { code: 'INTERNAL', details: { problem: 'not-a-record' } }, 'schemaVersion 0 is not valid');
    t.throws(() => store.collection({ ...NETS, version: 0 }), { code: 'INVALID_CONFIG' });
  });

  test('corrupt records: clear errors naming the file; list still returns the good ones', async (t, { store, writeRaw, pathOf }) => {
    const nets = store.collection(NETS);
    await nets.create('good1', net('a'));
    await nets.create('good2', net('b'));
    const full = envelope('trunc', net('t'));
    const cases: [string, string, string, RegExp][] = [
      ['empty', '', 'empty', /empty file/],
      ['blank', '\n  \n', 'empty', /empty file/],
      ['trunc', full.slice(0, full.length - 9), 'invalid-json', /invalid JSON/],
      ['garbage', 'not json at all', 'invalid-json', /invalid JSON/],
      ['bare', JSON.stringify(net('bare')), 'not-a-record', /envelope/],
      ['schema', envelope('schema', { name: 'x', subnet: 42 }), 'schema', /networks schema/],
      ['unknownkey', envelope('unknownkey', { ...net('x'), color: 'red' }), 'schema', /networks schema/],
      ['moved', envelope('elsewhere', net('m')), 'id-mismatch', /elsewhere/],
    ];
    for (const [id, text] of cases) await writeRaw('networks', id, text);
    for (const [id, , problem, re] of cases) {
      const err = await nets.get(id).then(
        () => undefined,
        (e: unknown) => e,
      );
      t.ok(err instanceof TsnetError, `${id}: get throws a TsnetError`);
      t.match(err, { code: 'INTERNAL', details: { path: pathOf('networks', id), problem } }, `${id}: ${problem}`);
      t.match((err as Error).message, pathOf('networks', id), `${id}: message names the file`);
      t.match((err as Error).message, re, `${id}: message says what is wrong`);
    }
    const l = await nets.list();
    t.same(l.entries.map((e) => e.id), ['good1', 'good2'], 'list returns every good record');
    t.same(
      l.errors.map((e) => (e.details as { path?: string }).path).sort(),
      cases.map(([id]) => pathOf('networks', id)).sort(),
      'and one error per bad file, naming it',
    );
    t.ok(l.errors.every((e) => e.code === 'INTERNAL'));
    await t.rejects(nets.update('trunc', (c) => c), { code: 'INTERNAL', details: { problem: 'invalid-json' } }, 'update refuses a corrupt record');
    t.same(await nets.put('trunc', net('repaired')), net('repaired'), 'put repairs');
    t.same(await nets.get('trunc'), net('repaired'));
    t.equal(await nets.delete('garbage'), true, 'delete removes a corrupt record');
    t.equal((await nets.list()).errors.length, cases.length - 2);
  });

  test('set aside: a record that cannot be read leaves the collection, kept for inspection; the id is free', async (t, { store, writeRaw, pathOf }) => {
    const nets = store.collection(NETS);
    await nets.create('good', net('g'));
    await writeRaw('networks', 'trunc', envelope('trunc', net('t')).slice(0, 20));
    await writeRaw('networks', 'junk', 'not json');
    await writeRaw('networks', 'newer', JSON.stringify({ schemaVersion: 9, id: 'newer', record: net('n') }));
    t.equal(await nets.setAside('good'), false, 'a readable record stays');
    t.equal(await nets.setAside('none'), false, 'nothing to set aside');
    t.equal(await nets.setAside('newer'), false, 'a newer tsnet\'s record stays (it is not corrupt, only not ours)');
    t.equal(await nets.get('junk', { setAside: true }), undefined, 'get with setAside: reads as absent');
    t.same((await nets.listSetAside()).map((r) => r.id), ['junk'], 'and it was set aside');
    const l = await nets.list({ setAside: true });
    t.same(l.entries.map((e) => e.id), ['good'], 'list returns the good records');
    t.same(l.errors, [], 'no failure: what does not read is "unreadable"');
    const trunc = l.unreadable?.find((e) => e.details['id'] === 'trunc');
    t.match(trunc, { code: 'INTERNAL', details: { problem: 'invalid-json', path: pathOf('networks', 'trunc') } }, 'the error names the file and the problem');
    t.match(trunc?.message, /set aside as /, 'and says where it went');
    t.ok(typeof trunc?.details['setAside'] === 'string');
    t.match(l.unreadable?.find((e) => e.details['id'] === 'newer'), { details: { problem: 'newer-version' } }, 'the newer record is still reported');
    t.equal(l.unreadable?.find((e) => e.details['id'] === 'newer')?.details['setAside'], undefined, 'but not moved');
    t.same((await nets.listSetAside()).map((r) => r.id), ['junk', 'trunc']);
    t.same((await nets.list()).errors.map((e) => e.details['id']), ['newer'], 'set-aside records are met no more');
    await nets.create('trunc', net('again'));
    t.same(await nets.get('trunc'), net('again'), 'its id is free again');
    t.equal(await nets.discardSetAside('trunc'), true);
    t.equal(await nets.discardSetAside('trunc'), false, 'discard is idempotent');
    t.same((await nets.listSetAside()).map((r) => r.id), ['junk']);
  });

  test('ids, collection names and lock names are validated (no path traversal)', async (t, { store }) => {
    const nets = store.collection(NETS);
    for (const id of BAD_IDS) {
      const label = JSON.stringify(id);
      await t.rejects(nets.get(id), { code: 'INVALID_CONFIG' }, `get ${label}`);
      await t.rejects(nets.create(id, net('x')), { code: 'INVALID_CONFIG' }, `create ${label}`);
      await t.rejects(nets.put(id, net('x')), { code: 'INVALID_CONFIG' }, `put ${label}`);
      await t.rejects(nets.update(id, (c) => c), { code: 'INVALID_CONFIG' }, `update ${label}`);
      await t.rejects(nets.delete(id), { code: 'INVALID_CONFIG' }, `delete ${label}`);
      await t.rejects(store.reservations('pool').reserve(id, 'me'), { code: 'INVALID_CONFIG' }, `reserve ${label}`);
      await t.rejects(store.reservations('pool').release(id), { code: 'INVALID_CONFIG' }, `release ${label}`);
    }
    for (const id of ['n1', 'a'.repeat(64), '10.0.0.5', 'fd00::5', 'tcp-8080', 'Net_1.x@y']) {
      await nets.put(id, net('ok'));
      t.same(await nets.get(id), net('ok'), `valid id ${id}`);
    }
    for (const name of ['', '../x', 'a/b', '.x', 'UPPER', 'x'.repeat(65)]) {
      t.throws(() => store.collection({ ...NETS, name }), { code: 'INVALID_CONFIG' }, `collection ${JSON.stringify(name)}`);
      t.throws(() => store.reservations(name), { code: 'INVALID_CONFIG' }, `pool ${JSON.stringify(name)}`);
    }
    for (const name of ['', '../x', '/abs', 'a b', 'x'.repeat(257)]) {
      await t.rejects(store.withLock(name, async () => 1), { code: 'INVALID_CONFIG' }, `lock ${JSON.stringify(name)}`);
    }
    const r = store.reservations('pool');
    for (const owner of ['', 'a\0b', 'x'.repeat(4097)]) {
      await t.rejects(r.reserve('k', owner), { code: 'INVALID_CONFIG' }, `owner of ${owner.length} chars`);
    }
  });

  test('reservations: create-exclusive, owner, release (checked), releaseOwner, releaseAll, list', async (t, { store }) => {
    const r = store.reservations('net1-ipv4');
    t.equal(r.name, 'net1-ipv4');
    t.same(await r.list(), []);
    t.equal(await r.reserve('10.0.0.2', 'ctr1/eth0'), true, 'free key: reserved');
    t.equal(await r.reserve('10.0.0.2', 'ctr2/eth0'), false, 'taken key: false');
    t.equal(await r.reserve('10.0.0.2', 'ctr1/eth0'), false, 'taken even for the same owner');
    t.equal(await r.owner('10.0.0.2'), 'ctr1/eth0');
    t.equal(await r.owner('10.0.0.3'), undefined);
    t.equal(await r.reserve('fd00::5', 'ctr2/eth0'), true, 'IPv6 key');
    t.equal(await r.reserve('10.0.0.3', 'ctr2/eth0'), true);
    t.same(await r.list(), [
      { key: '10.0.0.2', owner: 'ctr1/eth0' },
      { key: '10.0.0.3', owner: 'ctr2/eth0' },
      { key: 'fd00::5', owner: 'ctr2/eth0' },
    ]);
    t.same(await store.reservations('other').list(), [], 'pools are separate');
    t.equal(await store.reservations('other').reserve('10.0.0.2', 'x'), true, 'same key in another pool');
    t.equal(await r.release('10.0.0.2', 'ctr2/eth0'), false, 'release by a non-owner: false');
    t.equal(await r.owner('10.0.0.2'), 'ctr1/eth0', 'and still held');
    t.equal(await r.release('10.0.0.2', 'ctr1/eth0'), true, 'release by the owner');
    t.equal(await r.release('10.0.0.2', 'ctr1/eth0'), false, 'again: false, no error');
    t.equal(await r.release('10.0.0.9'), false, 'never reserved: false, no error');
    t.equal(await r.reserve('10.0.0.2', 'ctr3/eth0'), true, 'released key can be reserved again');
    t.same(await r.releaseOwner('ctr2/eth0'), ['10.0.0.3', 'fd00::5']);
    t.same(await r.list(), [{ key: '10.0.0.2', owner: 'ctr3/eth0' }]);
    t.equal(await r.release('10.0.0.2'), true, 'release without owner check');
    await r.reserve('10.0.0.7', 'a');
    await r.reserve('10.0.0.8', 'b');
    t.same(await r.releaseAll(), ['10.0.0.7', '10.0.0.8']);
    t.same(await r.list(), []);
  });

  test('reservations: 40 concurrent reservers of one key, exactly one wins', async (t, { store }) => {
    const r = store.reservations('race');
    const wins = await Promise.all(Array.from({ length: 40 }, (_, i) => r.reserve('10.1.0.1', `owner${i}`)));
    t.equal(wins.filter(Boolean).length, 1);
    const winner = wins.indexOf(true);
    t.equal(await r.owner('10.1.0.1'), `owner${winner}`);
    // 40 reservers over 10 keys: each key exactly once.
    const got = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        for (let k = 0; k < 10; k++) {
          const key = `10.2.0.${(i + k) % 10}`;
          if (await r.reserve(key, `o${i}`)) return key;
        }
        return undefined;
      }),
    );
    const keys = got.filter((k): k is string => k !== undefined);
    t.equal(keys.length, 10, 'ten winners');
    t.equal(new Set(keys).size, 10, 'no key twice');
  });

  test('withLock: serializes, returns, propagates, refuses re-entry, times out, aborts', async (t, { store }) => {
    let inside = 0;
    let maxInside = 0;
    const order: number[] = [];
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        store.withLock('networks', async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          await tick();
          await tick();
          order.push(i);
          inside--;
          return i * 2;
        }),
      ),
    );
    t.equal(maxInside, 1, 'one holder at a time');
    t.same(order, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'FIFO within a process');
    t.same(results, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
    await t.rejects(
      store.withLock('networks', async () => {
        throw new TsnetError('NOT_FOUND', 'inner');
      }),
      { code: 'NOT_FOUND', message: 'inner' },
    );
    t.equal(await store.withLock('networks', async () => 'free again'), 'free again', 'released after a throw');
    await t.rejects(
      store.withLock('networks', () => store.withLock('networks', async () => 1)),
      { code: 'INTERNAL', message: /already held by this task/ },
      're-entry is an error, not a deadlock',
    );
    t.equal(await store.withLock('a', () => store.withLock('b', async () => 'nested')), 'nested', 'a different lock may nest');

    let release!: () => void;
    const holding = store.withLock('sandbox:s1', () => new Promise<void>((r) => (release = r)));
    await tick();
    const t0 = Date.now();
    const err = await store.withLock('sandbox:s1', async () => 'never', { timeoutMs: 150 }).catch((e: unknown) => e);
    t.match(err, { code: 'UNAVAILABLE', details: { lock: 'sandbox:s1', timeoutMs: 150 } }, 'bounded wait: UNAVAILABLE');
    t.match((err as Error).message, /lock sandbox:s1 .*not acquired within 150 ms/, 'names the lock');
    // A lower bound only (it waited); the upper one just proves the wait is bounded, whatever the machine's load.
    t.ok(Date.now() - t0 >= 140 && Date.now() - t0 < 30_000, 'gave up after the timeout, not before');
    const ac = new AbortController();
    const aborted = store.withLock('sandbox:s1', async () => 'never', { signal: ac.signal });
    setTimeout(() => ac.abort(), 30);
    await t.rejects(aborted, { code: 'UNAVAILABLE', message: /aborted/ });
    const pre = new AbortController();
    pre.abort();
    await t.rejects(store.withLock('x', async () => 1, { signal: pre.signal }), { code: 'UNAVAILABLE' }, 'already aborted');
    const queued = store.withLock('sandbox:s1', async () => 'after');
    release();
    await holding;
    t.equal(await queued, 'after', 'waiters that gave up do not block the next one');
    t.equal(await store.withLock('sandbox:s1', async () => 'free', { timeoutMs: 500 }), 'free');
  });

  test('a record update waits for (and times out on) its record lock like any lock', async (t, { store }) => {
    const c = store.collection(COUNTER);
    await c.create('slow', { n: 0 });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = c.update('slow', async (cur) => {
      await gate;
      return { n: cur.n + 1 };
    });
    await tick();
    await t.rejects(c.update('slow', (cur) => ({ n: cur.n + 100 }), { timeoutMs: 100 }), { code: 'UNAVAILABLE', message: /record\/counters\/slow/ });
    release();
    t.same(await first, { n: 1 });
    t.same(await c.get('slow'), { n: 1 }, 'the timed-out update did nothing');
    t.equal(await c.get('slow', { timeoutMs: 1 }).then((r) => r?.n), 1, 'reads take no lock');
  });
}
