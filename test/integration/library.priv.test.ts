/**
 * The library API on the real kernel and the on-disk store, in an isolated host: many operations
 * at once on one controller (networks, sandboxes, connects, deletes) leave records, IPAM and kernel
 * in agreement, packets flow, events arrive, and removing everything leaves nothing behind.
 */
import t from 'tap';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { nullLogger } from '../../core/log.js';
import { createController, type TsnetEventName } from '../../lib/index.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';

interface IpLink { ifname: string; master?: string }
const links = async (host: IsolatedHost): Promise<IpLink[]> => JSON.parse((await host.exec(['ip', '-json', 'link', 'show'])).stdout) as IpLink[];

t.test('concurrent operations on one library controller, real kernel', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    if (host.ns.kind !== 'path') throw new Error('isolated host without a netns path');
    const c = await createController({ stateDir: host.stateDir, runDir: host.runDir, hostNetns: host.ns.path, log: nullLogger });
    host.defer(() => c.close());
    const counts = new Map<TsnetEventName, number>();
    for (const n of ['network.created', 'network.removed', 'endpoint.created', 'endpoint.joined', 'endpoint.removed', 'sandbox.created', 'sandbox.removed'] as const) {
      c.on(n, () => counts.set(n, (counts.get(n) ?? 0) + 1));
    }
    const before = (await links(host)).map((l) => l.ifname).sort();

    await Promise.all(Array.from({ length: 4 }, (_, i) => c.createNetwork({ name: `n${i}` })));
    await Promise.all(Array.from({ length: 12 }, (_, i) => c.createSandbox({
      name: `s${i}`, mode: { kind: 'network', network: `n${i % 4}` },
      connect: i === 0 ? { ports: [{ hostPort: 8080, containerPort: 80 }] } : {},
    })));
    await Promise.all([
      ...Array.from({ length: 6 }, (_, i) => c.connect(`s${i}`, `n${(i + 1) % 4}`)),
      ...Array.from({ length: 3 }, (_, i) => c.deleteSandbox(`s${9 + i}`)),
      c.createNetwork({ name: 'late' }),
    ]);

    const sandboxes = await c.listSandboxes();
    t.equal(sandboxes.length, 9, 'nine sandboxes');
    const eps = (await Promise.all(sandboxes.map((s) => c.endpointsOf(s.id)))).flat();
    t.equal(eps.length, 9 + 6, 'one endpoint each plus six connects');
    const addrs = eps.map((e) => e.addresses[0]);
    t.equal(new Set(addrs).size, addrs.length, 'no address handed out twice');
    const nets = await c.listNetworks();
    t.equal(new Set(nets.filter((n) => n.subnets.length > 0).map((n) => n.subnets[0]?.subnet)).size, nets.filter((n) => n.subnets.length > 0).length, 'distinct subnets');
    const hostLinks = await links(host);
    for (const e of eps) {
      const bridge = (nets.find((n) => n.id === e.networkId)?.config as { bridge?: string } | undefined)?.bridge;
      t.equal(hostLinks.find((l) => l.ifname === e.hostIf)?.master, bridge, `${e.hostIf} is a port of ${bridge}`);
    }
    // The records match the sandboxes' interfaces, and packets flow between two of them.
    const s0 = sandboxes.find((s) => s.name === 's0');
    const s4 = sandboxes.find((s) => s.name === 's4');
    if (s0?.netns.kind !== 'own' || s4?.netns.kind !== 'own') throw new Error('sandboxes without their own netns');
    const inS0 = JSON.parse((await host.execIn({ kind: 'path', path: s0.netns.path }, ['ip', '-json', 'addr', 'show'])).stdout) as { addr_info: { local: string; prefixlen: number; family: string }[] }[];
    const have = inS0.flatMap((l) => l.addr_info.filter((a) => a.family === 'inet' && a.local !== '127.0.0.1').map((a) => `${a.local}/${a.prefixlen}`)).sort();
    t.same(have, eps.filter((e) => e.sandboxId === s0.id).flatMap((e) => e.addresses).sort(), 's0 has exactly its recorded addresses');
    const s4addr = eps.find((e) => e.sandboxId === s4.id)?.addresses[0]?.split('/')[0] ?? '';
    await host.execIn({ kind: 'path', path: s0.netns.path }, ['busybox', 'ping', '-c', '1', '-W', '2', s4addr]);
    t.pass(`s0 reaches s4 (${s4addr}) on n0`);
    t.same((await c.dnsRecords('n0')).map((r) => r.name).filter((n) => /^s\d+$/.test(n)).sort(), ['s0', 's4', 's8'].filter((n) => sandboxes.some((s) => s.name === n)).concat(['s3']).sort(), 'n0 names: its three members and s3 (connected)');

    // The port published through the library answers from the host (kernel DNAT).
    host.spawnIn({ kind: 'path', path: s0.netns.path }, ['busybox', 'nc', '-ll', '-p', '80', '-e', 'echo', 'hi from s0']);
    let answer = '';
    for (let i = 0; i < 40 && answer === ''; i++) {
      answer = await host.exec(['busybox', 'nc', '-w', '2', '127.0.0.1', '8080'], { input: '' }).then((r) => r.stdout.trim(), () => '');
      if (answer === '') await new Promise((r) => setTimeout(r, 100));
    }
    t.equal(answer, 'hi from s0', 'ports: [{ hostPort: 8080, containerPort: 80 }] answers on 127.0.0.1:8080');

    // Remove everything at once.
    await Promise.all(sandboxes.map((s) => c.deleteSandbox(s.id)));
    await Promise.all(['n0', 'n1', 'n2', 'n3', 'late'].map((n) => c.deleteNetwork(n)));
    t.same((await links(host)).map((l) => l.ifname).sort(), before, 'only what was there before');
    t.same(await readdir(join(host.runDir, 'netns')).catch(() => []), [], 'no sandbox namespace left');
    t.same(Object.fromEntries(counts), {
      'network.created': 5, 'sandbox.created': 12, 'endpoint.created': 18, 'endpoint.joined': 18,
      'endpoint.removed': 18, 'sandbox.removed': 12, 'network.removed': 5,
    }, 'one event per change');
  });
});
