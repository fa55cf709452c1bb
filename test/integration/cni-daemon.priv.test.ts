/**
 * The CNI plugins through their C front end and `tsnet daemon`'s CNI service (engine/cni-service.ts),
 * driven exactly as libcni does: the same results, real packets and clean-up as the standalone
 * plugin; errors with the right code; a burst of concurrent ADDs; and the fallback to the Node
 * plugin when no daemon listens (also in the middle of a run: the daemon stopped).
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { cniSocketPath } from '../../engine/cni-service.js';
import { cniRequestsServed, startDaemon } from '../helpers/cli.js';
import type { Attachment } from '../helpers/cni.js';
import { bridgeList, CniError, Libcni, links, makeCniPath, neighbour, nftElements, nsPath, reservations } from '../helpers/cni.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';
import { request, startServer } from '../helpers/traffic.js';

async function daemon(host: IsolatedHost): Promise<{ socket: string; stop: () => Promise<void>; kill: () => Promise<void> }> {
  const d = await startDaemon(host);
  return {
    socket: cniSocketPath(host.runDir),
    stop: async () => {
      d.child.kill('SIGTERM');
      await d.close(10_000);
    },
    kill: async () => {
      d.child.kill('SIGKILL');
      await d.close();
    },
  };
}

async function cniFor(host: IsolatedHost, socket: string): Promise<{ cni: Libcni; dataDir: string }> {
  const cniPath = await makeCniPath(join(host.runDir, 'cni-bin'));
  return { cni: new Libcni({ ns: host.ns, cniPath, cacheDir: join(host.stateDir, 'cni-cache'), extraEnv: { TSNET_CNI_SOCKET: socket } }), dataDir: join(host.stateDir, 'ipam') };
}

const served = async (host: IsolatedHost): Promise<number> => (await cniRequestsServed(host)) ?? -1;

t.test('through the daemon: results, packets, published port, CHECK, errors, DEL leaves nothing', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const d = await daemon(host);
    const { cni, dataDir } = await cniFor(host, d.socket);
    const nbr = await neighbour(host);
    const before = await links(host);
    const list = bridgeList('1.1.0', dataDir);
    const ns1 = await host.newNetns('c1');
    const ns2 = await host.newNetns('c2');
    const a1: Attachment = { containerId: 'd1', netns: nsPath(ns1), ifName: 'eth0', capabilityArgs: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] } };
    const a2: Attachment = { containerId: 'd2', netns: nsPath(ns2), ifName: 'eth0' };
    const r1 = await cni.addList(list, a1);
    const r2 = await cni.addList(list, a2);
    t.equal(await served(host), 2, 'both ADDs were served by the daemon');
    t.equal(r1['cniVersion'], '1.1.0', 'result in the config version');
    const ip1 = (r1['ips'] as { address: string }[])[0]?.address.split('/')[0] ?? '';
    const ip2 = (r2['ips'] as { address: string }[])[0]?.address.split('/')[0] ?? '';
    t.match(ip1, /^10\.77\.0\.\d+$/, 'an address from the range');
    t.not(ip1, ip2, 'distinct addresses');
    await startServer(host, ns1, 'tcp', '0.0.0.0', 80);
    t.match(await request(ns2, 'tcp', ip1, 80), /.+/, 'c2 reaches c1');
    t.match(await request(nbr, 'tcp', '192.168.77.1', 8080), /.+/, 'a neighbour reaches c1 through the published port');
    await cni.checkList(list, a1);
    t.pass('CHECK passes');

    // Errors travel back with their code: a taken host port (nothing left of the failed ADD), bad config.
    const ns3 = await host.newNetns('c3');
    const a3: Attachment = { containerId: 'd3', netns: nsPath(ns3), ifName: 'eth0', capabilityArgs: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] } };
    const linksBefore3 = (await links(host)).length;
    const e1 = await cni.addList(list, a3).then(() => undefined, (e: unknown) => e);
    t.ok(e1 instanceof CniError, 'a taken host port fails the ADD');
    t.equal((await links(host)).length, linksBefore3, 'the failed ADD left no interface');
    t.equal((await reservations(dataDir)).length, 2, 'the failed ADD left no reservation');
    const bad = bridgeList('1.1.0', dataDir, { mtu: 'x' });
    const e2 = await cni.addList(bad, a3).then(() => undefined, (e: unknown) => e);
    t.equal(e2 instanceof CniError ? e2.code : undefined, 7, 'a bad mtu is error 7');
    t.match(e2 instanceof CniError ? e2.result.json?.['details'] : '', /mtu/, 'naming the field');

    await cni.delList(list, a1);
    await cni.delList(list, a2);
    await cni.delList(list, a2); // DEL is idempotent through the daemon too
    t.same(await reservations(dataDir), [], 'addresses released');
    t.equal(await nftElements(host), 0, 'port elements removed');
    t.same((await links(host)).filter((l) => l !== 'tcni0'), before, 'no interface left but the bridge');
    await d.stop();
    t.notOk(await stat(d.socket).then(() => true, () => false), 'the stopped daemon removed its socket');
  });
});

t.test('through the daemon: 24 concurrent ADDs then DELs, all ok, distinct, nothing left', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const d = await daemon(host);
    const { cni, dataDir } = await cniFor(host, d.socket);
    const list = bridgeList('1.0.0', dataDir);
    const before = (await links(host)).length;
    const atts: Attachment[] = [];
    for (let i = 0; i < 24; i++) {
      const ns = await host.newNetns(`p${i}`);
      atts.push({ containerId: `p${i}`, netns: nsPath(ns), ifName: 'eth0', capabilityArgs: { portMappings: [{ hostPort: 31000 + i, containerPort: 80, protocol: 'tcp' }] } });
    }
    const rs = await Promise.allSettled(atts.map((a) => cni.addList(list, a)));
    const ok = rs.filter((r): r is PromiseFulfilledResult<Record<string, unknown>> => r.status === 'fulfilled');
    t.equal(ok.length, 24, `every ADD succeeded${rs.find((r) => r.status === 'rejected') ? `: ${String((rs.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason)}` : ''}`);
    t.equal(new Set(ok.map((r) => (r.value['ips'] as { address: string }[])[0]?.address)).size, 24, 'distinct addresses');
    t.equal(await nftElements(host), 24, 'one port element each');
    t.equal(await served(host), 24, 'all served by the daemon');
    const ds = await Promise.allSettled(atts.map((a) => cni.delList(list, a)));
    t.equal(ds.filter((r) => r.status === 'fulfilled').length, 24, 'every DEL succeeded');
    t.same(await reservations(dataDir), [], 'nothing reserved');
    t.equal(await nftElements(host), 0, 'no port element');
    t.equal((await links(host)).length, before + 1, 'only the bridge is new');
    const left = (await readdir(dataDir, { recursive: true })).filter((f) => f.endsWith('.tmp'));
    t.same(left, [], 'no temporary file left');
    await d.stop();
  });
});

t.test('no daemon: the front end runs the Node plugin (also beside the socket a killed daemon left)', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const d = await daemon(host);
    const { cni, dataDir } = await cniFor(host, d.socket);
    const list = bridgeList('1.0.0', dataDir);
    const ns1 = await host.newNetns('c1');
    const ns2 = await host.newNetns('c2');
    const a1: Attachment = { containerId: 'f1', netns: nsPath(ns1), ifName: 'eth0' };
    const a2: Attachment = { containerId: 'f2', netns: nsPath(ns2), ifName: 'eth0' };
    await cni.addList(list, a1);
    t.equal(await served(host), 1, 'the first ADD went through the daemon');
    await d.kill();
    t.ok(await stat(d.socket).then((s) => s.isSocket(), () => false), 'the killed daemon left its socket (connections are refused)');
    const r2 = await cni.addList(list, a2);
    t.match((r2['ips'] as { address: string }[])[0]?.address, /^10\.77\.0\.\d+\/24$/, 'ADD without a daemon works');
    const ip1 = (await host.execIn(ns1, ['ip', '-4', '-br', 'addr', 'show', 'eth0'])).stdout.split(/\s+/)[2]?.split('/')[0] ?? '';
    await startServer(host, ns1, 'tcp', '0.0.0.0', 80);
    t.match(await request(ns2, 'tcp', ip1, 80), /.+/, 'the container added without the daemon reaches the one added through it');
    await cni.delList(list, a1);
    await cni.delList(list, a2);
    t.same(await reservations(dataDir), [], 'both released without the daemon');
  });
});
