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
  t.equal(await s.reserve('10.0.0.2', ' c1 ', 'eth0', 0), true);
  t.equal(await s.reserve('10.0.0.2', 'c2', 'eth0', 0), false, 'taken: false, not an error');
  t.equal(await readFile(join(s.dir, '10.0.0.2'), 'utf8'), 'c1\r\neth0', 'content: id CRLF ifname (id trimmed)');
  t.equal(await readFile(join(s.dir, 'last_reserved_ip.0'), 'utf8'), '10.0.0.2', 'hint per range set');
  t.equal(await s.lastReserved(0), '10.0.0.2');
  t.equal(await s.lastReserved(1), undefined);
  await s.reserve('fd00::2', 'c1', 'eth0', 1);
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
