/**
 * Multi-host networks on etcd, end to end: three simulated hosts (each its own network and mount
 * namespaces, state and run directories and `tsnet daemon`) on an underlay bridge with a real
 * etcd, one setup shared by the cases in order.
 */
import t from 'tap';
import { ipOf, makeCluster, NET_TOOLS as TOOLS, resolveFrom, tcpFrom, within, type Cluster, type SimHost } from '../helpers/cluster-hosts.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';

const node = process.execPath;

async function udpFrom(h: SimHost, from: string, addr: string, port: number): Promise<string | undefined> {
  const r = await h.cli('exec', from, node, TOOLS, 'udp-client', addr, String(port), 'hi', '3000');
  return r.code === 0 ? r.stdout.trim() : undefined;
}

async function pingFrom(h: SimHost, from: string, addr: string): Promise<boolean> {
  return (await h.cli('exec', from, 'busybox', 'ping', '-c', '1', '-W', '2', addr)).code === 0;
}

t.test('three hosts, one etcd: overlay networks across hosts', { skip: skipUnlessRoot, timeout: 900_000 }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cl: Cluster = await makeCluster(host, { hosts: 3, members: 1, ttl: 4, grace: 6 });
    const [h1, h2, h3] = cl.hosts as [SimHost, SimHost, SimHost];
    for (const h of cl.hosts) await h.startDaemon();

    await t.test('overlay create on one host is seen on the others', async (t) => {
      await h1.ok('network', 'create', '-d', 'overlay', '--subnet', '10.91.7.0/24', 'ov');
      for (const h of [h2, h3]) {
        const ms = await within(3000, async () => (await h.ok('network', 'ls', '--format', '{{.Name}}')).split('\n').includes('ov'));
        t.ok(ms !== undefined, `${h.name} has ov (${Math.round(ms ?? -1)} ms)`);
      }
      const r = await h2.cli('network', 'create', '-d', 'overlay', 'ov');
      t.equal(r.code, 4, 'a second network of that name is refused cluster-wide');
    });

    await t.test('containers on three hosts reach each other (TCP, UDP, ICMP) and resolve each other by name', async (t) => {
      for (const [i, h] of [h1, h2, h3].entries()) {
        await h.ok('run', '-d', '--name', `c${i + 1}`, '--network', 'ov', '--network-alias', `svc${i + 1}`, '--', node, TOOLS, 'tcp-server', '0.0.0.0', '7000');
        await h.ok('exec', '-d', `c${i + 1}`, node, TOOLS, 'udp-server', '0.0.0.0', '7001');
      }
      const ips = [await ipOf(h1, 'c1', 'ov'), await ipOf(h2, 'c2', 'ov'), await ipOf(h3, 'c3', 'ov')];
      t.equal(new Set(ips).size, 3, `distinct addresses ${ips.join(' ')}`);
      const hs = [h1, h2, h3];
      for (let a = 0; a < 3; a++) {
        for (let b = 0; b < 3; b++) {
          if (a === b) continue;
          const from = hs[a] as SimHost;
          t.match(await tcpFrom(from, `c${a + 1}`, ips[b] as string, 7000), /^hello hi/, `TCP c${a + 1}@h${a + 1} -> c${b + 1}@h${b + 1}`);
          t.equal(await resolveFrom(from, `c${a + 1}`, `c${b + 1}`), ips[b], `c${a + 1} resolves c${b + 1}`);
        }
      }
      t.match(await udpFrom(h1, 'c1', ips[2] as string, 7001), /^hello hi/, 'UDP c1 -> c3');
      t.ok(await pingFrom(h2, 'c2', ips[0] as string), 'ICMP c2 -> c1');
      t.equal(await resolveFrom(h3, 'c3', 'svc1'), ips[0], 'an alias of a container on another host');
      t.match(await tcpFrom(h1, 'c1', 'c2', 7000), /^hello hi/, 'TCP by name across hosts');
      const inspect = JSON.parse(await h1.ok('network', 'inspect', 'ov')) as { Containers: Record<string, { Name: string; Host?: string }>; Scope: string }[];
      const names = Object.values(inspect[0]?.Containers ?? {}).map((c) => c.Name).sort();
      t.same(names, ['c1', 'c2', 'c3'], 'network inspect lists the endpoints of every host');
      t.equal(inspect[0]?.Scope, 'swarm');
      const mtu = (await h1.exec(['ip', '-o', 'link', 'show', 'vx-' + JSON.parse(await h1.ok('network', 'inspect', '-f', '{{json .Id}}', 'ov')).slice(0, 12)])).stdout;
      t.match(mtu, /mtu 1450/, 'the VXLAN device carries the encapsulation (1450)');
    });

    await t.test('isolation and --internal across hosts; a published port on each host', async (t) => {
      await h2.ok('network', 'create', '-d', 'overlay', '--subnet', '10.91.8.0/24', 'ov2');
      await h3.ok('run', '-d', '--name', 'd3', '--network', 'ov2', '--', node, TOOLS, 'tcp-server', '0.0.0.0', '7000');
      const d3 = await ipOf(h3, 'd3', 'ov2');
      t.equal(await tcpFrom(h1, 'c1', d3, 7000, 1500), undefined, 'a container of ov cannot reach one of ov2 on another host');
      await h1.ok('network', 'create', '-d', 'overlay', '--internal', '--subnet', '10.91.9.0/24', 'ovi');
      await h1.ok('run', '-d', '--name', 'i1', '--network', 'ovi', '--', node, TOOLS, 'tcp-server', '0.0.0.0', '7000');
      await h2.ok('run', '-d', '--name', 'i2', '--network', 'ovi', '--', node, TOOLS, 'tcp-server', '0.0.0.0', '7000');
      t.match(await tcpFrom(h2, 'i2', await ipOf(h1, 'i1', 'ovi'), 7000), /^hello/, 'an internal network still connects its containers across hosts');
      // A server on h1's underlay address: the outside world for the containers of h2.
      const outside = host.spawnIn(host.ns, ['nsenter', '-t', String(h1.pid), '-n', '--', node, TOOLS, 'tcp-server', h1.ip, '9000']);
      await new Promise((r) => setTimeout(r, 800));
      t.match(await tcpFrom(h2, 'c2', h1.ip, 9000), /^hello/, 'a container of ov on h2 reaches the outside through its host');
      t.equal(await tcpFrom(h2, 'i2', h1.ip, 9000, 1500), undefined, 'a container of the internal network does not');
      outside.child.kill('SIGKILL');
      for (const [i, h] of [h1, h2, h3].entries()) {
        await h.ok('run', '-d', '--name', `p${i + 1}`, '--network', 'ov', '-p', `${8080 + i}:7000`, '--', node, TOOLS, 'tcp-server', '0.0.0.0', '7000');
      }
      for (const [i, h] of [h1, h2, h3].entries()) {
        const other = i === 0 ? h2 : h1;
        const r = await other.exec([node, TOOLS, 'tcp-client', h.ip, String(8080 + i), 'pub', '3000']).catch(() => undefined);
        t.match(r?.stdout ?? '', /^hello pub/, `port ${8080 + i} published on ${h.name}, reached from ${other.name}`);
      }
    });

    await t.test('3 x 30 concurrent runs get distinct addresses', async (t) => {
      // Three at a time per host, all hosts at once (nine concurrent starts on two cores).
      const worker = async (h: SimHost, k: number): Promise<void> => {
        for (let i = k; i < 30; i += 3) await h.ok('run', '-d', '--name', `m-${h.name}-${i}`, '--network', 'ov', '--', 'sleep', '600');
      };
      await Promise.all([h1, h2, h3].flatMap((h) => [0, 1, 2].map((k) => worker(h, k))));
      const inspect = JSON.parse(await h2.ok('network', 'inspect', 'ov')) as { Containers: Record<string, { Name: string; IPv4Address: string }> }[];
      const ms = Object.values(inspect[0]?.Containers ?? {}).filter((c) => c.Name.startsWith('m-'));
      t.equal(ms.length, 90, 'every container is listed');
      t.equal(new Set(ms.map((c) => c.IPv4Address)).size, 90, 'no duplicate address');
      for (const h of [h1, h2, h3]) {
        const names = (await h.ok('ps', '-q', '--filter', 'name=m-')).trim().split('\n').filter(Boolean);
        if (names.length > 0) await h.ok('rm', '-f', ...names);
      }
    });

    await t.test('a killed host is removed from the others after its TTL, and returns without duplicates', async (t) => {
      const c3 = await ipOf(h3, 'c3', 'ov');
      const vx = `vx-${(JSON.parse(await h1.ok('network', 'inspect', '-f', '{{json .Id}}', 'ov')) as string).slice(0, 12)}`;
      const neigh = async (): Promise<string> => (await h1.exec(['ip', 'neigh', 'show', 'dev', vx])).stdout;
      t.match(await neigh(), c3, 'h1 has c3\'s neighbour entry');
      await h3.killDaemon();
      const gone = await within(15_000, async () => !(await neigh()).includes(`${c3} `) && (await resolveFrom(h1, 'c1', 'c3')) === undefined);
      t.ok(gone !== undefined, `c3's entry and name gone from h1 after the TTL (${Math.round(gone ?? -1)} ms)`);
      await h3.startDaemon();
      const back = await within(10_000, async () => (await resolveFrom(h1, 'c1', 'c3')) === c3);
      t.ok(back !== undefined, 'c3 resolves again once h3 is back');
      const lines = (await neigh()).split('\n').filter((l) => l.startsWith(`${c3} `));
      t.equal(lines.length, 1, 'one neighbour entry for c3, not two');
      t.match(await tcpFrom(h1, 'c1', c3, 7000), /^hello/, 'c1 reaches c3 again');
    });

    await t.test('etcd stopped: connectivity and DNS stay, cluster operations fail fast, local networks work; started: resync', async (t) => {
      const c2 = await ipOf(h2, 'c2', 'ov');
      const member = cl.etcd[0];
      if (member === undefined) throw new Error('no etcd');
      await member.stop();
      t.match(await tcpFrom(h1, 'c1', c2, 7000), /^hello/, 'c1 still reaches c2');
      t.equal(await resolveFrom(h1, 'c1', 'c2'), c2, 'and resolves it');
      const t0 = performance.now();
      const r = await h1.cli('network', 'create', '-d', 'overlay', 'ov-down');
      const took = performance.now() - t0;
      t.equal(r.code, 6, `cluster operation fails (exit 6): ${r.stderr.trim()}`);
      t.match(r.stderr, /cluster store etcd:\/\/.* is unreachable/, 'the error names the store');
      t.ok(took < 10_000, `no hang (${Math.round(took)} ms)`);
      await h1.ok('network', 'create', '--subnet', '10.60.0.0/24', 'localnet');
      await h1.ok('run', '-d', '--name', 'l1', '--network', 'localnet', '--', 'sleep', '600');
      t.pass('a local network and container work while etcd is down');
      await member.start();
      await h2.ok('run', '-d', '--name', 'late2', '--network', 'ov', '--', node, TOOLS, 'tcp-server', '0.0.0.0', '7000');
      const seen = await within(10_000, async () => (await resolveFrom(h1, 'c1', 'late2')) !== undefined);
      t.ok(seen !== undefined, `a container started after etcd returned is seen from h1 (${Math.round(seen ?? -1)} ms)`);
    });

    await t.test('removal: refused while another host has endpoints, then gone everywhere', async (t) => {
      const r = await h1.cli('network', 'rm', 'ov2');
      t.equal(r.code, 4, 'ov2 has an endpoint on h3');
      t.match(r.stderr, /other hosts/);
      await h3.ok('rm', '-f', 'd3');
      await h1.ok('network', 'rm', 'ov2');
      for (const h of [h2, h3]) {
        const ms = await within(3000, async () => !(await h.ok('network', 'ls', '--format', '{{.Name}}')).split('\n').includes('ov2'));
        t.ok(ms !== undefined, `${h.name} no longer has ov2`);
      }
    });
  });
});
