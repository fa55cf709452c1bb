import t from 'tap';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openHostLocalStore } from './host-local.js';

t.test('host-local layout: files, content, hint, lock; exclusive reservation; legacy files', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'hl-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const s = await openHostLocalStore({ dataDir: base, network: 'net1' });
  t.equal(s.dir, join(base, 'net1'));
  t.same(await readdir(s.dir), ['lock'], 'lock file created with the directory');
  t.equal(await s.reserve('10.0.0.2', ' c1 ', 'eth0'), true);
  await s.setLastReserved(0, '10.0.0.2');
  t.equal(await s.reserve('10.0.0.2', 'c2', 'eth0'), false, 'taken: false, not an error');
  t.equal(await readFile(join(s.dir, '10.0.0.2'), 'utf8'), 'c1\r\neth0', 'content: id CRLF ifname (id trimmed)');
  t.equal(await readFile(join(s.dir, 'last_reserved_ip.0'), 'utf8'), '10.0.0.2', 'hint per range set');
  t.equal(await s.lastReserved(0), '10.0.0.2');
  t.equal(await s.lastReserved(1), undefined);
  await s.reserve('fd00::2', 'c1', 'eth0');
  await writeFile(join(s.dir, '10.0.0.9'), 'legacy-id\n');
  t.same((await s.list()).sort((a, b) => a.ip.localeCompare(b.ip)), [
    { ip: '10.0.0.2', containerId: 'c1', ifName: 'eth0' },
    { ip: '10.0.0.9', containerId: 'legacy-id', ifName: undefined },
    { ip: 'fd00::2', containerId: 'c1', ifName: 'eth0' },
  ], 'list skips lock and hints, reads legacy files');
  await s.release('10.0.0.2');
  await s.release('10.0.0.2');
  t.equal(await s.get('10.0.0.2'), undefined, 'release is idempotent');
  t.equal(await s.withLock(async () => 42), 42, 'lock taken and released');
  const again = await openHostLocalStore({ dataDir: base, network: 'net1' });
  t.equal((await again.list()).length, 2, 'reopening keeps everything');
});

t.test('host-local: no temp file is left, a killed writer\'s temp files are removed, bad dataDir is a config error', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'hl-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const s = await openHostLocalStore({ dataDir: base, network: 'n' });
  await Promise.all(Array.from({ length: 20 }, (_, i) => s.reserve(`10.0.0.${i + 2}`, `c${i}`, 'eth0')));
  t.same((await readdir(s.dir)).filter((n) => n.startsWith('.')), [], 'reservations leave no temp file');
  await writeFile(join(s.dir, '.10.0.0.50.tmp-999999-abcd'), 'dead\r\neth0');
  await writeFile(join(s.dir, `.10.0.0.51.tmp-${process.pid}-abcd`), 'alive\r\neth0');
  t.same(await s.removeStaleTemps((pid) => pid === process.pid), ['.10.0.0.50.tmp-999999-abcd'], 'only the dead writer\'s temp file');
  t.equal((await s.list()).length, 20, 'temp files are never reservations');
  await writeFile(join(base, 'file'), 'x');
  await t.rejects(openHostLocalStore({ dataDir: join(base, 'file'), network: 'n' }), { code: 'INVALID_CONFIG', details: { field: 'dataDir' } });
  await t.rejects(openHostLocalStore({ dataDir: '/dev/null', network: 'n' }), { code: 'INVALID_CONFIG' });
});
