/**
 * The nftables backend against a real kernel, with real packets. Topology (all inside
 * withIsolatedHost; forwarding enabled in the "host" namespace only):
 *
 *   neighbour N  eth0 192.168.77.2 fd77::2 ── vn0 192.168.77.1 fd77::1 ┐
 *                                                                      host
 *   container C  eth0 10.88.0.2 fd88::2 ── vc0 ── tsbr0 10.88.0.1 fd88::1 ┘
 *   container D  eth0 10.89.0.2          ── vd0 ── tsbr1 10.89.0.1     (another network)
 */
import t from 'tap';
import type { EndpointId, IfName, NetnsRef, NetworkId } from '../../core/net.js';
import type { EndpointPorts, Firewall } from '../../sys/firewall/api.js';
import { createFakeFirewall, firewallScenario, sampleMapping as m } from '../../sys/firewall/fake.js';
import { createNftablesFirewall } from '../../sys/firewall/nftables.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';
import { reachable, request, startServer } from '../helpers/traffic.js';
import { E1, NET1, NET2, buildWorld } from '../helpers/firewall-topology.js';


const ruleset = async (host: IsolatedHost, ns: NetnsRef = host.ns): Promise<string> => (await host.execIn(ns, ['nft', 'list', 'ruleset'])).stdout;

interface NftJson {
  nftables: { map?: { name: string; table: string; elem?: unknown[] }; chain?: { name: string; table: string }; rule?: { chain: string; table: string } }[];
}
const tableJson = async (host: IsolatedHost, ns: NetnsRef = host.ns): Promise<NftJson> => JSON.parse((await host.execIn(ns, ['nft', '-j', 'list', 'table', 'inet', 'tsnet'])).stdout) as NftJson;
const elementCount = (j: NftJson): number => j.nftables.reduce((s, x) => s + (x.map?.elem?.length ?? 0), 0);

t.test('nftables: removePorts with what was published: by key, only while every key is still the endpoint\'s', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    await buildWorld(host);
    const calls: string[] = [];
    const { run } = await import('../../sys/exec.js');
    const fw: Firewall = createNftablesFirewall({
      netns: host.ns,
      exec: (argv, o) => {
        calls.push(argv.join(' '));
        return run(argv, o);
      },
    });
    await fw.ensureNetwork(NET1);
    await fw.ensurePorts(E1);
    await fw.ensurePorts({ ...E1, endpointId: 'e3' as EndpointId, mappings: [m('tcp', [8090], [80], '10.88.0.3')] });
    calls.length = 0;
    await fw.removePorts(E1.endpointId, { published: E1 });
    t.same((await fw.list()).endpoints, ['e3'], 'all of e1\'s elements gone, e3\'s kept');
    t.notOk(calls.slice(0, 2).some((c) => / list table /.test(c)), `no read of the whole table: ${calls.slice(0, 2).join(' | ')}`);
    t.equal(calls.filter((c) => / -f -$/.test(c)).length, 2, 'one get, one delete');

    // A retried DEL: e1's port 8080 was taken by e2 meanwhile. Nothing of e2's may go.
    const E2: EndpointPorts = { ...E1, endpointId: 'e2' as EndpointId, mappings: [m('tcp', [8080], [80], '10.88.0.4')] };
    await fw.ensurePorts(E2);
    await fw.removePorts(E1.endpointId, { published: E1 });
    t.same((await fw.list()).endpoints, ['e2', 'e3'], 'e2 keeps the port e1 had');
    t.match(await ruleset(host), /tcp \. 8080 comment "e2" : 10\.88\.0\.4 \. 80/, 'its element is intact');

    // A record that says more than the kernel has (one mapping never made): the search by owner.
    await fw.removePorts('e2' as EndpointId, { published: E2 });
    await fw.ensurePorts({ ...E1, mappings: E1.mappings.slice(0, 2) });
    await fw.removePorts(E1.endpointId, { published: E1 });
    t.same((await fw.list()).endpoints, ['e3'], 'what e1 has is removed all the same');
    // published for another endpoint is not trusted for this one.
    await fw.removePorts('e3' as EndpointId, { published: E1 });
    t.same((await fw.list()).endpoints, [], 'e3 removed by owner');
    await fw.removeAll();
  });
});

t.test('nftables: rules, real traffic, removal', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await buildWorld(host);
    const before = await ruleset(host);
    const fw: Firewall = createNftablesFirewall({ netns: host.ns });
    t.equal(fw.backend, 'nftables');

    await fw.ensureNetwork(NET1);
    await fw.ensureNetwork(NET2);
    await fw.ensurePorts(E1);
    const rs = await ruleset(host);
    t.match(rs, /table inet tsnet/, 'one tsnet table');
    t.match(rs, /tcp \. 9000-9001 comment "e1" : 10\.88\.0\.2/, 'a range is one element');
    t.match(rs, /"tsbr0" : jump nw-n1-fwd-in/, 'the bridge dispatches to its network');
    t.equal(elementCount(await tableJson(host)), 8 + 9, 'elements: 8 published (shifted range = 2) + 9 dispatch');
    t.same(await fw.list(), { networks: ['n1', 'n2'], endpoints: ['e1'] }, 'list() reads exactly what exists');

    // servers in the container
    await startServer(host, w.c, 'tcp', '10.88.0.2', 80);
    await startServer(host, w.c, 'udp', '10.88.0.2', 53);
    await startServer(host, w.c, 'tcp', 'fd88::2', 80);
    await startServer(host, w.c, 'tcp', '10.88.0.2', 9001);
    await startServer(host, w.c, 'tcp', '10.88.0.2', 7001);
    await startServer(host, w.n, 'tcp', '192.168.77.2', 5000);
    await startServer(host, w.n, 'tcp', 'fd77::2', 5000);

    t.equal(await request(w.n, 'tcp', '192.168.77.1', 8080, 'tcp'), 'hello tcp from 10.88.0.2 to 192.168.77.2', 'DNAT tcp; the container sees the neighbour (no SNAT)');
    t.equal(await request(w.n, 'udp', '192.168.77.1', 5353, 'udp'), 'hello udp from 10.88.0.2 to 192.168.77.2', 'DNAT udp');
    t.equal(await request(w.n, 'tcp', 'fd77::1', 8080, 'v6'), 'hello v6 from fd88::2 to fd77::2', 'DNAT IPv6');
    t.equal(await request(w.n, 'tcp', '192.168.77.1', 9001, 'r'), 'hello r from 10.88.0.2 to 192.168.77.2', 'same range: 9001 → 9001');
    t.notOk(await reachable(w.n, 'tcp', '192.168.77.1', 9000, 800), 'same range keeps the port: 9000 → 9000, where nothing listens');
    await startServer(host, w.c, 'tcp', '10.88.0.2', 9000);
    t.ok(await reachable(w.n, 'tcp', '192.168.77.1', 9000), 'range: the second port works');
    t.ok(await reachable(w.n, 'tcp', '192.168.77.1', 7000), 'N:1: 7000 → 80');
    t.ok(await reachable(w.n, 'tcp', '192.168.77.1', 7010), 'N:1: 7010 → 80');
    t.ok(await reachable(w.n, 'tcp', '192.168.77.1', 6001), 'shifted: 6001 → 7001');
    t.notOk(await reachable(w.n, 'tcp', '192.168.77.1', 6000, 800), 'shifted: 6000 → 7000, where nothing listens');
    t.equal(await request(w.c, 'tcp', '192.168.77.2', 5000, 'out'), 'hello out from 192.168.77.2 to 192.168.77.1', 'masquerade: the neighbour sees the host');
    t.equal(await request(w.c, 'tcp', 'fd77::2', 5000, 'out6'), 'hello out6 from fd77::2 to fd77::1', 'masquerade IPv6');
    t.notOk(await reachable(w.n, 'tcp', '10.88.0.2', 80, 800), 'direct access to a container address from outside is dropped');
    t.notOk(await reachable(w.d, 'tcp', '10.88.0.2', 80, 800), 'other tsnet bridges are isolated');
    t.ok(await reachable(w.d, 'tcp', '192.168.77.1', 8080), '... but may use published ports');
    await host.exec(['ip', 'link', 'set', 'dev', 'vc0', 'type', 'bridge_slave', 'hairpin', 'on']);
    t.equal(await request(w.c, 'tcp', '192.168.77.1', 8080, 'hairpin'), 'hello hairpin from 10.88.0.2 to 10.88.0.1', 'hairpin: a container reaches its own published port (masqueraded)');
    t.equal(await request(host.ns, 'tcp', '192.168.77.1', 8080, 'self'), 'hello self from 10.88.0.2 to 192.168.77.1', 'from the host itself (output chain)');
    await host.exec(['sysctl', '-qw', 'net.ipv4.conf.tsbr0.route_localnet=1']);
    t.equal(await request(host.ns, 'tcp', '127.0.0.1', 8081, 'lo'), 'hello lo from 10.88.0.2 to 10.88.0.1', '127.0.0.1 publishing (route_localnet + loopback masquerade)');
    t.notOk(await reachable(w.n, 'tcp', '192.168.77.1', 8081, 800), 'a 127.0.0.1 port is not published on other addresses');
    // A neighbour that routes 127.0.0.1 to the host (CVE-2020-8558 style) must not reach it either.
    await host.execIn(w.n, ['sysctl', '-qw', 'net.ipv4.conf.eth0.route_localnet=1']);
    await host.execIn(w.n, ['ip', 'rule', 'add', 'to', '127.0.0.1', 'lookup', '100', 'pref', '10']);
    await host.execIn(w.n, ['ip', 'rule', 'add', 'lookup', 'local', 'pref', '100']);
    await host.execIn(w.n, ['ip', 'rule', 'del', 'pref', '0']); // the local table no longer comes first
    await host.execIn(w.n, ['ip', 'route', 'add', '127.0.0.1/32', 'via', '192.168.77.1', 'dev', 'eth0', 'table', '100']);
    t.notOk(await reachable(w.n, 'tcp', '127.0.0.1', 8081, 800), 'loopback guard: a neighbour cannot reach a 127.0.0.1 port');
    await host.exec(['nft', 'flush', 'chain', 'inet', 'tsnet', 'guard']);
    t.ok(await reachable(w.n, 'tcp', '127.0.0.1', 8081), '(without the guard it could: the check above is real)');
    await fw.ensureNetwork(NET2); // any ensureNetwork repairs the skeleton
    t.notOk(await reachable(w.n, 'tcp', '127.0.0.1', 8081, 800), 'guard restored by the next ensureNetwork');
    await host.execIn(w.n, ['ip', 'rule', 'del', 'to', '127.0.0.1', 'lookup', '100', 'pref', '10']);

    await fw.ensureNetwork({ ...NET1, internal: true });
    t.notOk(await reachable(w.c, 'tcp', '192.168.77.2', 5000, 800), 'internal: no egress');
    t.notOk(await reachable(w.n, 'tcp', '192.168.77.1', 8080, 800), 'internal: no ingress through published ports');
    await fw.ensureNetwork(NET1);
    t.ok(await reachable(w.c, 'tcp', '192.168.77.2', 5000), 're-applied policy replaces the rules');

    await fw.removePorts(E1.endpointId);
    await fw.removePorts(E1.endpointId);
    t.notOk(await reachable(w.n, 'tcp', '192.168.77.1', 8080, 800), 'ports removed');
    t.same(await fw.list(), { networks: ['n1', 'n2'], endpoints: [] });
    await fw.removeNetwork(NET1.networkId);
    await fw.removeNetwork(NET1.networkId);
    await fw.removeNetwork(NET2.networkId);
    t.same(await fw.list(), { networks: [], endpoints: [] });
    const left = await tableJson(host);
    t.equal(elementCount(left), 0, 'no element left');
    t.notOk(left.nftables.some((x) => x.chain?.name.startsWith('nw-')), 'no network chain left');
    await fw.removeAll();
    await fw.removeAll();
    t.equal(await ruleset(host), before, 'removeAll: the ruleset is the empty one from before');
  });
});

t.test('nftables: the shared scenario observes what the fake observes', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const bridges = ['tsb1', 'tsb2', 'tsb3'] as [IfName, IfName, IfName];
    const real = await firewallScenario(createNftablesFirewall({ netns: host.ns }), { bridges });
    t.same(real, await firewallScenario(createFakeFirewall(), { bridges }));
    t.equal(await ruleset(host), '', 'and it leaves nothing behind');
  });
});

t.test('nftables: 20 concurrent callers on one namespace', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const ep = (i: number): EndpointPorts => ({
      endpointId: `c${i}` as EndpointId,
      networkId: 'n1' as NetworkId,
      bridge: 'tsbr0' as IfName,
      mappings: [m('tcp', [20_000 + i * 10], [80], `10.88.${i}.2`), m('udp', [30_000 + i * 10, 30_000 + i * 10 + 5], [53], `10.88.${i}.2`)],
    });
    // 20 first-time callers race to create the table
    await Promise.all(Array.from({ length: 20 }, (_, i) => createNftablesFirewall({ netns: host.ns }).ensurePorts(ep(i))));
    const fw = createNftablesFirewall({ netns: host.ns });
    t.same((await fw.list()).endpoints, Array.from({ length: 20 }, (_, i) => `c${i}`).sort(), 'all 20 published');
    const j = await tableJson(host);
    t.equal(j.nftables.filter((x) => x.rule?.chain === 'ports').length, 12, 'skeleton rules exist exactly once');
    t.equal(elementCount(j), 40);
    // 10 removals and 10 additions of different endpoints at the same time, plus a network
    await Promise.all([
      ...Array.from({ length: 10 }, (_, i) => createNftablesFirewall({ netns: host.ns }).removePorts(`c${i}` as EndpointId)),
      ...Array.from({ length: 10 }, (_, i) => createNftablesFirewall({ netns: host.ns }).ensurePorts(ep(20 + i))),
      createNftablesFirewall({ netns: host.ns }).ensureNetwork(NET1),
    ]);
    t.same((await fw.list()).endpoints, Array.from({ length: 20 }, (_, i) => `c${i + 10}`).sort(), 'exactly the expected endpoints remain');
    const j2 = await tableJson(host);
    t.equal(elementCount(j2), 40 + 5, 'and exactly their elements (+5 dispatch of n1)');
    t.equal(j2.nftables.filter((x) => x.rule?.chain === 'forward').length, 3, 'skeleton still not duplicated');
    await fw.removeAll();
  });
});
