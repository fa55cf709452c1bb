/**
 * A 3-member etcd cluster that loses one member changes nothing for tsnet: two simulated hosts
 * (test/helpers/cluster-hosts.ts) with all three members as their store. The member lost is the
 * leader and the first endpoint every client tries (moved there with `etcdctl move-leader` first):
 * clients move on to the next member, watches resume there from their revision, and a new leader
 * is elected under them.
 */
import t from 'tap';
import { execDetails, inNetns, run } from '../../sys/exec.js';
import { ipOf, makeCluster, NET_TOOLS as TOOLS, resolveFrom, tcpFrom, within, type Cluster, type EtcdMember, type SimHost } from '../helpers/cluster-hosts.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';

const node = process.execPath;

/** `etcdctl endpoint status` of every member, run in `via`'s namespace: endpoint, member id, leader? */
async function status(via: EtcdMember, members: readonly EtcdMember[]): Promise<{ readonly endpoint: string; readonly id: string; readonly leader: boolean }[]> {
  const endpoints = members.map((m) => `http://${m.ip}:2379`).join(',');
  const r = await run(inNetns(via.ns, ['etcdctl', '--endpoints', endpoints, '--dial-timeout', '2s', '--command-timeout', '3s', 'endpoint', 'status']), { env: { ETCDCTL_API: '3' }, timeoutMs: 20_000 }).catch((e: unknown) => ({ stdout: execDetails(e)?.stdout ?? '' })); // a member down: the others' rows, and exit 1
  // "http://10.99.0.2:2379, 8e9e05c52164694d, 3.4.23, 20 kB, true, false, 2, 8, 8, "
  return r.stdout.split('\n').map((l) => l.split(',').map((f) => f.trim())).filter((f) => f.length > 5 && f[0]?.startsWith('http')).map((f) => ({ endpoint: f[0] ?? '', id: f[1] ?? '', leader: f[4] === 'true' }));
}

t.test('three etcd members, one lost (the leader, every client\'s first endpoint): nothing changes for tsnet', { skip: skipUnlessRoot, timeout: 600_000 }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cl: Cluster = await makeCluster(host, { hosts: 2, members: 3, ttl: 4, grace: 6 });
    const [h1, h2] = cl.hosts as [SimHost, SimHost];
    const [m0, m1] = cl.etcd as [EtcdMember, EtcdMember, EtcdMember];
    for (const h of cl.hosts) await h.startDaemon();
    t.match(cl.storeUrl, /^etcd:\/\/10\.99\.0\.2:2379,10\.99\.0\.3:2379,10\.99\.0\.4:2379$/, 'the hosts name all three members, m0 first');

    await h1.ok('network', 'create', '-d', 'overlay', '--subnet', '10.92.0.0/24', 'ov');
    await within(3000, async () => (await h2.ok('network', 'ls', '--format', '{{.Name}}')).split('\n').includes('ov'));
    await h1.ok('run', '-d', '--name', 'c1', '--network', 'ov', '--', node, TOOLS, 'tcp-server', '0.0.0.0', '7000');
    await h2.ok('run', '-d', '--name', 'c2', '--network', 'ov', '--', node, TOOLS, 'tcp-server', '0.0.0.0', '7000');
    const c2 = await ipOf(h2, 'c2', 'ov');
    const before = await within(5000, async () => (await resolveFrom(h1, 'c1', 'c2')) === c2);
    t.ok(before !== undefined, 'before: c1 on h1 resolves c2 on h2');
    t.match(await tcpFrom(h1, 'c1', c2, 7000), /^hello hi/, 'before: and reaches it');

    // m0 the leader (so that its loss also costs an election).
    let st = await status(m1, cl.etcd);
    t.equal(st.length, 3, `three members answer (${st.map((s) => `${s.endpoint} ${s.id}${s.leader ? ' leader' : ''}`).join('; ')})`);
    const m0Id = st.find((s) => s.endpoint === `http://${m0.ip}:2379`)?.id;
    const leader = st.find((s) => s.leader);
    if (m0Id !== undefined && leader !== undefined && leader.id !== m0Id) {
      await run(inNetns(m1.ns, ['etcdctl', '--endpoints', leader.endpoint, 'move-leader', m0Id]), { env: { ETCDCTL_API: '3' }, timeoutMs: 20_000 });
      st = await status(m1, cl.etcd);
    }
    t.ok(st.find((s) => s.id === m0Id)?.leader === true, 'm0 leads');

    await m0.stop();
    st = await status(m1, cl.etcd);
    t.equal(st.length, 2, 'two members left');
    const elected = await within(10_000, async () => (await status(m1, cl.etcd)).some((s) => s.leader));
    t.ok(elected !== undefined, 'and one of them leads');

    t.match(await tcpFrom(h1, 'c1', c2, 7000), /^hello hi/, 'c1 still reaches c2');
    t.equal(await resolveFrom(h1, 'c1', 'c2'), c2, 'and resolves it');

    const made = await h2.cli('network', 'create', '-d', 'overlay', '--subnet', '10.92.1.0/24', 'ov2');
    t.equal(made.code, 0, `a network created on h2 with m0 gone: ${made.stderr.trim() || 'ok'}`);
    const seen = await within(5000, async () => (await h1.ok('network', 'ls', '--format', '{{.Name}}')).split('\n').includes('ov2'));
    t.ok(seen !== undefined, `h1 sees it (${Math.round(seen ?? -1)} ms): its watch went on on another member`);

    const ran = await h2.cli('run', '-d', '--name', 'c3', '--network', 'ov', '--', node, TOOLS, 'tcp-server', '0.0.0.0', '7000');
    t.equal(ran.code, 0, `a container started on h2 with m0 gone: ${ran.stderr.trim() || 'ok'}`);
    const c3 = await ipOf(h2, 'c3', 'ov');
    t.not(c3, c2, `with an address of its own (${c3})`);
    const named = await within(10_000, async () => (await resolveFrom(h1, 'c1', 'c3')) === c3);
    t.ok(named !== undefined, `h1's resolver has it (${Math.round(named ?? -1)} ms)`);
    t.match(await tcpFrom(h1, 'c1', c3, 7000), /^hello hi/, 'and c1 reaches it across hosts');
    const r1 = await h1.cli('run', '-d', '--name', 'c4', '--network', 'ov', '--', 'sleep', '600');
    t.equal(r1.code, 0, `a container started on h1: ${r1.stderr.trim() || 'ok'}`);
    t.equal(new Set([await ipOf(h1, 'c1', 'ov'), c2, c3, await ipOf(h1, 'c4', 'ov')]).size, 4, 'four containers, four addresses');

    await m0.start();
    const back = await within(15_000, async () => (await status(m1, cl.etcd)).length === 3);
    t.ok(back !== undefined, 'm0 rejoins');
    for (const h of [h1, h2]) await h.ok('rm', '-f', ...(h === h1 ? ['c1', 'c4'] : ['c2', 'c3']));
    await h1.ok('network', 'rm', 'ov2');
    const gone = await within(5000, async () => !(await h2.ok('network', 'ls', '--format', '{{.Name}}')).split('\n').includes('ov2'));
    t.ok(gone !== undefined, 'a removal after m0 came back is seen on h2');
  });
});
