import t from 'tap';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { storeContract } from '../../test/contracts/store.js';
import { openFsStore } from './fs.js';

const dirs: string[] = [];
const tempDir = async (): Promise<string> => {
  const d = await mkdtemp(join(tmpdir(), 'tsnet-store-'));
  dirs.push(d);
  return d;
};
t.teardown(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

storeContract(t, {
  async open() {
    const dir = await tempDir();
    const store = await openFsStore({ dir });
    const pathOf = (collection: string, id: string): string => join(dir, 'records', collection, `${id}.json`);
    return {
      store,
      pathOf,
      async writeRaw(collection, id, text) {
        await mkdir(join(dir, 'records', collection), { recursive: true });
        await writeFile(pathOf(collection, id), text);
      },
      close: async () => undefined,
    };
  },
});

const Spec = { name: 'things', version: 1, schema: z.strictObject({ v: z.number() }) };

t.test('on-disk layout: envelope files, 0600, reservations hold the owner, no temp files left', async (t) => {
  const dir = await tempDir();
  const store = await openFsStore({ dir });
  t.equal(store.location, dir);
  await store.collection(Spec).put('a', { v: 1 });
  await store.collection(Spec).update('a', (c) => ({ v: c.v + 1 }));
  const file = join(dir, 'records', 'things', 'a.json');
  t.same(JSON.parse(await readFile(file, 'utf8')), { schemaVersion: 1, id: 'a', record: { v: 2 } });
  t.equal((await stat(file)).mode & 0o777, 0o600);
  t.same(await readdir(join(dir, 'records', 'things')), ['a.json'], 'no temp file left behind');
  t.equal(await store.reservations('p').reserve('10.0.0.2', 'ctr/eth0'), true);
  t.equal(await readFile(join(dir, 'reservations', 'p', '10.0.0.2'), 'utf8'), 'ctr/eth0');
  const secret = await stat(join(dir, '.lock-secret'));
  t.equal(secret.mode & 0o777, 0o600, 'lock secret is private');
  t.equal((await stat(dir)).mode & 0o777, 0o700, 'a state dir it creates is private');
});

t.test('list ignores temp files of interrupted writes and reports unexpected files', async (t) => {
  const dir = await tempDir();
  const store = await openFsStore({ dir });
  const things = store.collection(Spec);
  await things.put('a', { v: 1 });
  const d = join(dir, 'records', 'things');
  await writeFile(join(d, '.a.json.tmp-123-abcd'), '{"schemaVersion":1,"id":"a","rec'); // a writer killed mid-way
  await writeFile(join(d, 'README'), 'hello');
  await writeFile(join(d, 'Bad Name.json'), '{}');
  const l = await things.list();
  t.same(l.entries, [{ id: 'a', record: { v: 1 } }]);
  t.same(l.errors.map((e) => e.details['path']).sort(), [join(d, 'Bad Name.json'), join(d, 'README')]);
  t.ok(l.errors.every((e) => e.details['problem'] === 'unexpected-file' && /unexpected file/.test(e.message)));
  t.same(await things.get('a'), { v: 1 });
  await writeFile(join(dir, 'reservations-junk'), 'x');
  const r = store.reservations('p');
  await r.reserve('k1', 'o');
  await writeFile(join(dir, 'reservations', 'p', '.k2.tmp'), 'o2');
  t.same(await r.list(), [{ key: 'k1', owner: 'o' }], 'dot files are not reservations');
});

t.test('fs failures are TsnetErrors naming the path', async (t) => {
  const dir = await tempDir();
  const store = await openFsStore({ dir });
  await mkdir(join(dir, 'records'), { recursive: true });
  await writeFile(join(dir, 'records', 'things'), 'a file where a directory should be');
  const things = store.collection(Spec);
  await t.rejects(things.put('a', { v: 1 }), { code: 'INTERNAL', message: new RegExp(`write ${join(dir, 'records', 'things', 'a.json')}`) });
  await t.rejects(things.list(), { code: 'INTERNAL', message: /ENOTDIR/ });
  await t.rejects(things.get('a'), { code: 'INTERNAL', message: /ENOTDIR/ });
  await mkdir(join(dir, 'reservations'), { recursive: true });
  await writeFile(join(dir, 'reservations', 'p'), 'not a dir');
  await t.rejects(store.reservations('p').reserve('k', 'o'), { code: 'INTERNAL', message: /reserve .*reservations\/p\/k/ });
  const file = join(await tempDir(), 'plainfile');
  await writeFile(file, 'x');
  await t.rejects(openFsStore({ dir: join(file, 'sub') }), { message: new RegExp(`open store ${file}/sub`) });
});

t.test('the lock secret: created once, shared by concurrent openers, corrupt one refused', async (t) => {
  const dir = await tempDir();
  const stores = await Promise.all(Array.from({ length: 8 }, () => openFsStore({ dir })));
  const secret = await readFile(join(dir, '.lock-secret'), 'utf8');
  t.match(secret, /^[0-9a-f]{64}\n$/);
  t.same((await readdir(dir)).filter((n) => n.startsWith('.')), ['.lock-secret'], 'no temp left by the losers');
  // Every instance derives the same lock names: they exclude each other.
  let inside = 0;
  let max = 0;
  await Promise.all(
    stores.map((s) =>
      s.withLock('shared', async () => {
        inside++;
        max = Math.max(max, inside);
        await new Promise((r) => setTimeout(r, 5));
        inside--;
      }),
    ),
  );
  t.equal(max, 1, 'eight store instances on one dir: one holder at a time');
  const bad = await tempDir();
  await writeFile(join(bad, '.lock-secret'), 'short\n');
  await t.rejects(openFsStore({ dir: bad }), { code: 'INTERNAL', message: new RegExp(`${bad}/.lock-secret`) });
});

t.test('locks of different state directories are independent', async (t) => {
  const a = await openFsStore({ dir: await tempDir() });
  const b = await openFsStore({ dir: await tempDir() });
  let release!: () => void;
  const held = a.withLock('networks', () => new Promise<void>((r) => (release = r)));
  await new Promise((r) => setTimeout(r, 10));
  t.equal(await b.withLock('networks', async () => 'b got it', { timeoutMs: 1_000 }), 'b got it');
  await t.rejects(a.withLock('networks', async () => 1, { timeoutMs: 50 }), { code: 'UNAVAILABLE' });
  release();
  await held;
});

t.test('two store instances on one dir: cross-instance update is not lost, record lock times out', async (t) => {
  const dir = await tempDir();
  const s1 = await openFsStore({ dir });
  const s2 = await openFsStore({ dir });
  const s3 = await openFsStore({ dir, lockTimeoutMs: 100 });
  const c1 = s1.collection(Spec);
  const c2 = s2.collection(Spec);
  await c1.put('n', { v: 0 });
  await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? c1 : c2).update('n', async (c) => ({ v: c.v + 1 }))));
  t.same(await c1.get('n'), { v: 20 });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const slow = c1.update('n', async (c) => {
    await gate;
    return { v: c.v + 1 };
  });
  await new Promise((r) => setTimeout(r, 10));
  const err = await s3.collection(Spec).update('n', (c) => c).catch((e: unknown) => e);
  t.match(err, { code: 'UNAVAILABLE', details: { lock: 'record/things/n', holderPid: process.pid } }, 'default timeout of the store; names the holder');
  release();
  t.same(await slow, { v: 21 });
});

t.test('decoded records are kept by file identity: a file unchanged for a second is not decoded again, any rewrite is', async (t) => {
  const dir = await tempDir();
  const store = await openFsStore({ dir });
  const things = store.collection(Spec);
  const path = join(dir, 'records', 'things', 'a.json');
  await things.put('a', { v: 1 });
  const fresh1 = await things.get('a');
  const fresh2 = await things.get('a');
  t.not(fresh1, fresh2, 'a file written just now is decoded at every read (not kept)');
  t.notOk(Object.isFrozen(fresh1));
  await new Promise((r) => setTimeout(r, 1_100));
  const kept = await things.get('a');
  t.equal(await things.get('a'), kept, 'unchanged for a second: the same decoded record');
  t.equal((await things.list()).entries[0]?.record, kept, 'and list hands out the same');
  t.ok(Object.isFrozen(kept), 'frozen: a caller cannot change what others are handed');
  t.throws(() => {
    (kept as { v: number }).v = 5;
  }, TypeError);
  // Same size, same second: a rewrite by another process (here by hand, in place) is seen.
  await writeFile(path, (await readFile(path, 'utf8')).replace('"v":1', '"v":2'));
  t.same(await things.get('a'), { v: 2 }, 'a rewrite in place is read again');
  await things.put('a', { v: 3 });
  t.same(await things.get('a'), { v: 3 }, 'and so is a replacing write');
  await rm(path);
  t.equal(await things.get('a'), undefined, 'a removed file: gone');
  t.same((await things.list()).entries, []);
});
