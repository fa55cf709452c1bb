/**
 * `tsnet cni install` end to end: binaries and example conflist written, the installed
 * (extensionless, outside the package) binaries answer VERSION, and the example conflist drives a
 * container through ADD/CHECK/DEL with real packets from a neighbour to its published port.
 */
import t from 'tap';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { cniRequestsServed, startDaemon, TSNET_BIN } from '../helpers/cli.js';
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
    t.match(out, /C front end/, 'with a C compiler here, the names are the C front end');
    t.equal((await readFile(join(bin, 'tsnet-bridge'))).subarray(0, 4).toString('latin1'), '\x7fELF', 'tsnet-bridge is a native program');
    t.ok(files.includes('tsnet-cni-node'), 'the Node plugin it falls back to is beside it');
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

t.test('tsnet cni install: --no-front-end installs Node plugins; the front end uses the daemon of the install\'s --run-dir', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const plain = join(host.stateDir, 'bin-node');
    const out = (await host.exec([process.execPath, TSNET_BIN, 'cni', 'install', '--bin-dir', plain, '--conf-dir', '', '--no-front-end'])).stdout;
    t.notMatch(out, /C front end/, 'no front end reported');
    t.equal((await readFile(join(plain, 'tsnet-bridge'), 'utf8')).slice(0, 2), '#!', 'tsnet-bridge is the Node plugin itself');
    t.notOk((await readdir(plain)).includes('tsnet-cni-node'), 'no separate Node entry');
    t.equal((await execPlugin(host.ns, join(plain, 'tsnet-bridge'), { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}')).exit, 0, 'answers VERSION');

    // Installed for this run dir: with its daemon running, requests go there with no TSNET_CNI_SOCKET.
    const bin = join(host.stateDir, 'bin-fe');
    const g = ['--state-dir', host.stateDir, '--run-dir', host.runDir];
    await host.exec([process.execPath, TSNET_BIN, ...g, 'cni', 'install', '--bin-dir', bin, '--conf-dir', '']);
    await startDaemon(host);
    const dataDir = join(host.stateDir, 'ipam');
    const list: Conflist = { cniVersion: '1.0.0', name: 'fe', plugins: [{ type: 'tsnet-bridge', bridge: 'fe0', isGateway: true, ipam: { type: 'tsnet-ipam', ranges: [[{ subnet: '10.67.0.0/24' }]], dataDir } }] };
    const cni = new Libcni({ ns: host.ns, cniPath: bin, cacheDir: join(host.stateDir, 'cache') });
    const ns = await host.newNetns('c');
    const a = { containerId: 'fe1', netns: nsPath(ns), ifName: 'eth0' };
    await cni.addList(list, a);
    t.equal(await cniRequestsServed(host), 1, 'the ADD was served by the daemon');
    await cni.delList(list, a);
  });
});
