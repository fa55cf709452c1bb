/**
 * `tsnet cni install` end to end: binaries and example conflist written, the installed
 * (extensionless, outside the package) binaries answer VERSION, and the example conflist drives a
 * container through ADD/CHECK/DEL with real packets from a neighbour to its published port.
 */
import t from 'tap';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TSNET_BIN } from '../helpers/cli.js';
import { execPlugin, Libcni, neighbour, nsPath, type Conflist } from '../helpers/cni.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';
import { request, startServer } from '../helpers/traffic.js';

t.test('tsnet cni install: binaries, example conflist, a container on it', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const bin = join(host.stateDir, 'opt-cni-bin');
    const conf = join(host.stateDir, 'net.d');
    const out = (await host.exec([process.execPath, TSNET_BIN, 'cni', 'install', '--bin-dir', bin, '--conf-dir', conf, '--subnet', '10.66.0.0/24'])).stdout;
    t.match(out, /installed .*tsnet-bridge/, 'reports what it installed');
    const files = await readdir(bin);
    for (const f of ['tsnet-bridge', 'tsnet-ipam', 'tsnet-portmap', 'tsnet-cni.cjs']) t.ok(files.includes(f), `${f} installed`);
    t.equal(((await stat(join(bin, 'tsnet-bridge'))).mode & 0o111) !== 0, true, 'executable');
    const again = (await host.exec([process.execPath, TSNET_BIN, 'cni', 'install', '--bin-dir', bin, '--conf-dir', conf])).stdout;
    t.match(again, /kept .*10-tsnet\.conflist/, 'an existing conflist is kept');
    const v = await execPlugin(host.ns, join(bin, 'tsnet-portmap'), { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
    t.equal(v.exit, 0, 'installed binary answers VERSION');
    const example = JSON.parse(await readFile(join(conf, '10-tsnet.conflist'), 'utf8')) as Conflist;
    t.equal(example.name, 'tsnet');
    // The example uses the default dataDir, /var/lib/cni/networks; isolate.mjs puts a tmpfs there
    // only if the directory exists on the machine, so the test points it into its own state dir.
    const dataDir = join(host.stateDir, 'ipam');
    const p0 = example.plugins[0] as { ipam: Record<string, unknown> };
    const list: Conflist = { ...example, plugins: [{ ...p0, ipam: { ...p0.ipam, dataDir } }] };
    const cni = new Libcni({ ns: host.ns, cniPath: bin, cacheDir: join(host.stateDir, 'cache') });
    const nbr = await neighbour(host);
    const ns = await host.newNetns('c');
    const a = { containerId: 'inst1', netns: nsPath(ns), ifName: 'eth0', capabilityArgs: { portMappings: [{ hostPort: 8088, containerPort: 80, protocol: 'tcp' }] } };
    const r = await cni.addList(list, a);
    t.match((r['ips'] as { address: string }[])[0]?.address, /^10\.66\.0\.\d+\/24$/, 'address from the example subnet');
    await startServer(host, ns, 'tcp', '0.0.0.0', 80);
    t.match(await request(nbr, 'tcp', '192.168.77.1', 8088), /.+/, 'published port reachable from a neighbour');
    await cni.checkList(list, a);
    await cni.delList(list, a);
    t.same((await readdir(join(dataDir, 'tsnet'))).filter((f) => /^\d/.test(f)), [], 'released');
  });
});
