/**
 * CNI behaviours that used to go wrong, each driven as libcni does, in an isolated host:
 * - a network renamed in its configuration (same subnet) after its last container: the first ADD
 *   of the new name works, with one bridge holding the gateway and one route; while the old name
 *   still has a container, the new one is refused by name and nothing is created;
 * - a full disk: ADD fails with code 5 (I/O), keeps no reservation and no link;
 * - temp files a killed plugin left: DEL removes the attachment's, GC the others';
 * - STATUS says "not available" (50) while the range has no free address, ready again after a DEL;
 * - a daemon killed with -9 in the middle of a burst of ADDs: the runtime's DEL of every failed ADD
 *   and a GC leave exactly the live attachments' reservations (no lease leaks, no empty files).
 */
import t from 'tap';
import { readdir, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { cniSocketPath } from '../../engine/cni-service.js';
import { startDaemon } from '../helpers/cli.js';
import { bridgeList, CniError, Libcni, links, makeCniPath, nsPath, reservations, type Attachment } from '../helpers/cni.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';
import { request, startServer } from '../helpers/traffic.js';

function cniFor(host: IsolatedHost, extraEnv: Record<string, string> = {}): Promise<Libcni> {
  return makeCniPath(join(host.runDir, 'cni-bin')).then((cniPath) => new Libcni({ ns: host.ns, cniPath, cacheDir: join(host.stateDir, 'cni-cache'), extraEnv }));
}

const gatewayHolders = async (host: IsolatedHost, addr: string): Promise<string[]> => {
  const out = JSON.parse((await host.exec(['ip', '-json', 'addr', 'show'])).stdout) as { ifname: string; addr_info: { local: string }[] }[];
  return out.filter((l) => l.addr_info.some((a) => a.local === addr)).map((l) => l.ifname);
};
const routesTo = async (host: IsolatedHost, dst: string): Promise<number> =>
  (JSON.parse((await host.exec(['ip', '-json', 'route', 'show', dst])).stdout) as unknown[]).length;

t.test('a renamed network: reclaimed when unused, refused by name while in use', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cni = await cniFor(host);
    const dataDir = join(host.stateDir, 'ipam');
    const a = { ...bridgeList('1.0.0', dataDir), name: 'neta' };
    const b = { ...bridgeList('1.0.0', dataDir), name: 'netb' };
    const c = { ...b, name: 'netc', plugins: [{ ...(b.plugins[0] as Record<string, unknown>), bridge: 'tcni1' }] }; // renamed again, another bridge name
    const ns = await host.newNetns('p1');
    const att = (id: string, n = ns): Attachment => ({ containerId: id, netns: nsPath(n), ifName: 'eth0' });
    await cni.addList(a, att('c1'));
    await cni.delList(a, att('c1'));
    const r = await cni.addList(b, att('c2'));
    const ip = (r['ips'] as { address: string }[])[0]?.address.split('/')[0] ?? '';
    t.same(await gatewayHolders(host, '10.77.0.1'), ['tcni0'], 'one bridge holds the gateway');
    t.equal(await routesTo(host, '10.77.0.0/24'), 1, 'one route to the subnet');
    await startServer(host, ns, 'tcp', '0.0.0.0', 80);
    t.match(await request(host.ns, 'tcp', ip, 80), /.+/, 'the host reaches the pod of the renamed network');
    // While netb serves c2, a third name with the same subnet on another bridge is refused.
    const ns2 = await host.newNetns('p2');
    const before = await links(host);
    const err = await cni.addList(c, att('c3', ns2)).catch((e: unknown) => e);
    t.ok(err instanceof CniError, 'refused');
    t.match((err as CniError).message, /cni-netb still has containers on tcni0/, 'the holder is named');
    t.same(await links(host), before, 'no bridge or veth was created');
    t.same(await reservations(dataDir, 'netc'), [], 'no reservation kept');
    await cni.delList(b, att('c2'));
    // Now unused: the third name takes the subnet over, on its own bridge, the old bridge gone.
    await cni.addList(c, att('c3', ns2));
    t.same(await gatewayHolders(host, '10.77.0.1'), ['tcni1'], 'the gateway moved to the new bridge');
    t.notOk((await links(host)).includes('tcni0'), 'the unused bridge tsnet made is gone');
    t.equal(await routesTo(host, '10.77.0.0/24'), 1, 'still one route');
    await cni.delList(c, att('c3', ns2));
  });
});

t.test('a full disk: code 5, no reservation, no link; temp files of a killed plugin: DEL and GC remove them', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cni = await cniFor(host);
    const full = join(host.stateDir, 'full');
    await mkdir(full, { recursive: true });
    await host.exec(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tsnet-full', full]);
    host.defer(() => host.exec(['umount', full]).then(() => undefined));
    // Fill it: the directory and lock file of the network first, then every byte.
    const list = { ...bridgeList('1.0.0', full), name: 'fulln' };
    await mkdir(join(full, 'fulln'), { recursive: true });
    await writeFile(join(full, 'fulln', 'lock'), '');
    await host.exec(['sh', '-c', `dd if=/dev/zero of=${full}/filler bs=4k 2>/dev/null || true`]);
    const ns = await host.newNetns('f1');
    const before = await links(host);
    const err = await cni.addList(list, { containerId: 'f1', netns: nsPath(ns), ifName: 'eth0' }).catch((e: unknown) => e);
    t.ok(err instanceof CniError, 'ADD fails');
    t.equal((err as CniError).result.json?.['code'], 5, 'code 5: I/O failure (not 11, not 999)');
    t.match(String((err as CniError).result.json?.['details']), /no space left on device/i);
    t.same(await reservations(full, 'fulln'), [], 'no reservation kept');
    t.same(await links(host), before, 'no link left');

    // A killed plugin's temp files: the DNS record of an attachment (fixed name) and a reservation.
    const dataDir = join(host.stateDir, 'ipam');
    const dnsList = bridgeList('1.1.0', dataDir, { tsnetDns: true, tsnetStateDir: join(host.stateDir, 'tsnet') });
    const ns2 = await host.newNetns('t1');
    const a: Attachment = { containerId: 't1', netns: nsPath(ns2), ifName: 'eth0' };
    await cni.addList(dnsList, a);
    const recDir = join(host.stateDir, 'tsnet', 'records', 'cni-attachments');
    const [rec] = (await readdir(recDir)).filter((n) => n.endsWith('.json'));
    await writeFile(join(recDir, `.${rec ?? ''}.tmp`), '{"torn":');
    await writeFile(join(dataDir, 'tnet', '.10.77.0.99.tmp-999999-abcd'), 'dead\r\neth0');
    await cni.delList(dnsList, a);
    t.same((await readdir(recDir)).filter((n) => n.startsWith('.')), [], 'DEL removed the attachment\'s temp record');
    t.ok((await readdir(join(dataDir, 'tnet'))).includes('.10.77.0.99.tmp-999999-abcd'), 'a reservation temp is not DEL\'s to judge');
    await writeFile(join(recDir, '.cni-00000000-ffffffffffffffffffff.json.tmp'), '{');
    await cni.gcList(dnsList, []);
    t.same((await readdir(join(dataDir, 'tnet'))).filter((n) => n.startsWith('.')), [], 'GC removed the dead writer\'s reservation temp');
    t.same((await readdir(join(host.stateDir, 'ipam', 'tnet'))).filter((n) => /^\d/.test(n)), [], 'and no reservation is left');
  });
});

t.test('STATUS while the range is exhausted: 50, then ready after a DEL', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cni = await cniFor(host);
    const dataDir = join(host.stateDir, 'ipam');
    // A /29: .1 gateway, .2-.6 for containers (5).
    const list = bridgeList('1.1.0', dataDir, { ipam: { type: 'tsnet-ipam', ranges: [[{ subnet: '10.78.0.0/29' }]], dataDir } });
    await cni.statusList(list);
    const atts: Attachment[] = [];
    for (let i = 0; i < 5; i++) {
      const ns = await host.newNetns(`s${i}`);
      atts.push({ containerId: `s${i}`, netns: nsPath(ns), ifName: 'eth0' });
    }
    await Promise.all(atts.map((a) => cni.addList(list, a)));
    const err = await cni.statusList(list).catch((e: unknown) => e);
    t.ok(err instanceof CniError, 'STATUS fails');
    t.equal((err as CniError).result.json?.['code'], 50, 'code 50: cannot serve an ADD');
    t.match(String((err as CniError).result.json?.['details']), /no free address/);
    await cni.delList(list, atts[0] as Attachment);
    await cni.statusList(list);
    t.pass('ready again once an address is free');
    for (const a of atts.slice(1)) await cni.delList(list, a);
  });
});

t.test('daemon killed -9 in a burst of ADDs: DEL of the failed ones and GC leave exactly the live reservations', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const d = await startDaemon(host);
    const cni = await cniFor(host, { TSNET_CNI_SOCKET: cniSocketPath(host.runDir) });
    const dataDir = join(host.stateDir, 'ipam');
    const list = bridgeList('1.1.0', dataDir);
    const atts: Attachment[] = [];
    for (let i = 0; i < 24; i++) atts.push({ containerId: `k${i}`, netns: nsPath(await host.newNetns(`k${i}`)), ifName: 'eth0' });
    const results = atts.map((a, i) => new Promise((r) => setTimeout(r, i * 15)).then(() => cni.addList(list, a)).then(() => true, () => false));
    await new Promise((r) => setTimeout(r, 120));
    d.child.kill('SIGKILL');
    await d.close();
    const ok = await Promise.all(results);
    const failed = atts.filter((_, i) => !ok[i]);
    t.ok(failed.length > 0 && failed.length < atts.length, `the kill hit the burst: ${atts.length - failed.length} ADDs done, ${failed.length} failed`);
    // As containerd does after a failed setup: DEL (it has no cached result for those).
    for (const a of failed) await cni.delList(list, a);
    const live = atts.filter((_, i) => ok[i]);
    await cni.gcList(list, live.map((a) => ({ containerId: a.containerId, ifName: a.ifName })));
    const files = await reservations(dataDir);
    t.equal(files.filter((f) => /^\d/.test(f)).length, live.length, 'one reservation per live attachment, no leak');
    for (const f of files.filter((x) => /^\d/.test(x))) {
      const text = (await host.exec(['cat', join(dataDir, 'tnet', f)])).stdout;
      t.match(text, /^k\d+\r\neth0$/, `${f} names its owner`);
    }
    for (const a of live) await cni.delList(list, a);
    t.same((await reservations(dataDir)).filter((f) => /^\d/.test(f)), [], 'all released');
  });
});
