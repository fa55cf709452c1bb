/**
 * The iptables backend against a real kernel, with real packets (same checks as the nftables
 * test, plus the user chain). Topology (all inside
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
import { createIptablesFirewall } from '../../sys/firewall/iptables.js';
import { run } from '../../sys/exec.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';
import { reachable, request, startServer } from '../helpers/traffic.js';
import { E1, NET1, NET2, buildWorld } from '../helpers/firewall-topology.js';


/** Both families' iptables-save, without comments, counters, built-in chains or empty tables. */
const ruleset = async (host: IsolatedHost, ns: NetnsRef = host.ns): Promise<string> => {
  const out: string[] = [];
  for (const bin of ['iptables-save', 'ip6tables-save'] as const) {
    const text = (await host.execIn(ns, [bin])).stdout;
    let table: string[] = [];
    for (const line of text.split('\n')) {
      if (line.startsWith('#') || line === '') continue;
      if (/^:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) /.test(line)) continue;
      table.push(line.replace(/ \[\d+:\d+\]$/, ''));
      if (line === 'COMMIT') {
        if (table.length > 2) out.push(`${bin}: ${table.join('\n')}`);
        table = [];
      }
    }
  }
  return out.join('\n');
};
const ownedLines = async (host: IsolatedHost, ns: NetnsRef = host.ns): Promise<string[]> =>
  (await ruleset(host, ns)).split('\n').filter((l) => l.startsWith('-A') && /--comment "?tsnet/.test(l));

t.test('iptables: rules, real traffic, user chain, removal', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const w = await buildWorld(host);
    const before = await ruleset(host);
    const fw: Firewall = createIptablesFirewall({ netns: host.ns });
    t.equal(fw.backend, 'iptables');

    await fw.ensureNetwork(NET1);
    await fw.ensureNetwork(NET2);
    await fw.ensurePorts(E1);
    const rs = await ruleset(host);
    t.match(rs, /-A FORWARD -m comment --comment tsnet -j TSNET-USER\n-A FORWARD -m comment --comment tsnet -j TSNET-FORWARD/, 'user chain first, then tsnet');
    t.match(rs, /-A TSNET-DNAT -p tcp -m tcp --dport 9000:9001 -m comment --comment "tsnet:ep:e1" -j DNAT --to-destination 10\.88\.0\.2:9000-9001/, 'a range is one rule');
    t.match(rs, /--dport 6000:6001 .* --to-destination 10\.88\.0\.2:7000-7001\/6000/, 'a shifted range is one rule (DNAT port offset)');
    t.equal((await ownedLines(host)).filter((l) => l.includes('tsnet:ep:e1')).length, 7, 'one rule per mapping');
    await host.exec(['iptables', '-A', 'TSNET-USER', '-s', '192.0.2.1/32', '-j', 'DROP']);
    // what we generate is exactly what iptables-save prints: re-applying changes nothing
    const argvs: string[] = [];
    const counting = createIptablesFirewall({ netns: host.ns, exec: (argv, o) => (argvs.push(argv.slice(argv.indexOf('--') + 1).join(' ')), run(argv, o)) });
    await counting.ensureNetwork(NET1);
    await counting.ensurePorts(E1);
    t.same(argvs, ['iptables-save', 'ip6tables-save', 'iptables-save', 'ip6tables-save'], 'idempotent re-apply: reads only, no restore');
    // someone deletes our FORWARD jump; the next call repairs the skeleton
    await host.exec(['iptables', '-D', 'FORWARD', '-m', 'comment', '--comment', 'tsnet', '-j', 'TSNET-USER']);
    await host.exec(['iptables', '-I', 'FORWARD', '1', '-i', 'nothere0', '-j', 'ACCEPT']);
    await fw.ensureNetwork(NET2);
    t.match(await ruleset(host), /-A FORWARD -m comment --comment tsnet -j TSNET-USER\n-A FORWARD -m comment --comment tsnet -j TSNET-FORWARD\n-A FORWARD -i nothere0 -j ACCEPT/, 'jumps repaired, first and in order');
    await host.exec(['iptables', '-D', 'FORWARD', '-i', 'nothere0', '-j', 'ACCEPT']);
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
    await host.exec(['iptables', '-t', 'raw', '-F', 'TSNET-PREROUTING']);
    t.ok(await reachable(w.n, 'tcp', '127.0.0.1', 8081), '(without the guard it could: the check above is real)');
    await fw.ensureNetwork(NET2); // any ensureNetwork repairs the skeleton
    t.notOk(await reachable(w.n, 'tcp', '127.0.0.1', 8081, 800), 'guard restored by the next ensureNetwork');
    await host.execIn(w.n, ['ip', 'rule', 'del', 'to', '127.0.0.1', 'lookup', '100', 'pref', '10']);

    await host.exec(['iptables', '-I', 'TSNET-USER', '-s', '192.168.77.2/32', '-p', 'tcp', '--dport', '80', '-j', 'DROP']);
    t.notOk(await reachable(w.n, 'tcp', '192.168.77.1', 8080, 800), 'the user chain is consulted before tsnet rules');
    await host.exec(['iptables', '-D', 'TSNET-USER', '-s', '192.168.77.2/32', '-p', 'tcp', '--dport', '80', '-j', 'DROP']);
    t.ok(await reachable(w.n, 'tcp', '192.168.77.1', 8080), '... and the user decides');

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
    t.same((await ownedLines(host)).filter((l) => /tsnet:(net|ep):/.test(l)), [], 'no owned rule left');
    await fw.removeAll();
    await fw.removeAll();
    t.equal(
      await ruleset(host),
      'iptables-save: *filter\n:TSNET-USER -\n-A TSNET-USER -s 192.0.2.1/32 -j DROP\nCOMMIT\nip6tables-save: *filter\n:TSNET-USER -\nCOMMIT',
      'removeAll: the empty ruleset from before, plus the user chains (one with the user rule)',
    );
    t.equal(before, '', 'before: empty');
    await fw.ensureNetwork(NET1);
    t.match(await ruleset(host), /-A FORWARD -m comment --comment tsnet -j TSNET-USER\n[\s\S]*-A TSNET-USER -s 192\.0\.2\.1\/32 -j DROP/, 'the user rule survived everything and is jumped to again');
    await fw.removeAll();
  });
});

t.test('iptables: the shared scenario observes what the fake observes', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const bridges = ['tsb1', 'tsb2', 'tsb3'] as [IfName, IfName, IfName];
    const real = await firewallScenario(createIptablesFirewall({ netns: host.ns }), { bridges });
    t.same(real, await firewallScenario(createFakeFirewall(), { bridges }));
    t.equal(await ruleset(host), 'iptables-save: *filter\n:TSNET-USER -\nCOMMIT\nip6tables-save: *filter\n:TSNET-USER -\nCOMMIT', 'and it leaves nothing behind but the (empty) user chain');
  });
});

t.test('iptables: 20 concurrent callers on one namespace', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const ep = (i: number): EndpointPorts => ({
      endpointId: `c${i}` as EndpointId,
      networkId: 'n1' as NetworkId,
      bridge: 'tsbr0' as IfName,
      mappings: [m('tcp', [20_000 + i * 10], [80], `10.88.${i}.2`), m('udp', [30_000 + i * 10, 30_000 + i * 10 + 5], [53], `10.88.${i}.2`)],
    });
    // 20 first-time callers race to create the chains
    await Promise.all(Array.from({ length: 20 }, (_, i) => createIptablesFirewall({ netns: host.ns }).ensurePorts(ep(i))));
    const fw = createIptablesFirewall({ netns: host.ns });
    t.same((await fw.list()).endpoints, Array.from({ length: 20 }, (_, i) => `c${i}`).sort(), 'all 20 published');
    const owned = await ownedLines(host);
    t.equal(owned.filter((l) => l.includes('tsnet:ep:')).length, 40);
    t.equal(owned.filter((l) => l.startsWith('-A FORWARD')).length, 2, 'skeleton jumps exist exactly once');
    // 10 removals and 10 additions of different endpoints at the same time, plus a network
    await Promise.all([
      ...Array.from({ length: 10 }, (_, i) => createIptablesFirewall({ netns: host.ns }).removePorts(`c${i}` as EndpointId)),
      ...Array.from({ length: 10 }, (_, i) => createIptablesFirewall({ netns: host.ns }).ensurePorts(ep(20 + i))),
      createIptablesFirewall({ netns: host.ns }).ensureNetwork(NET1),
    ]);
    t.same((await fw.list()).endpoints, Array.from({ length: 20 }, (_, i) => `c${i + 10}`).sort(), 'exactly the expected endpoints remain');
    const owned2 = await ownedLines(host);
    t.equal(owned2.filter((l) => l.includes('tsnet:ep:')).length, 40, 'and exactly their rules');
    t.equal(owned2.filter((l) => l.startsWith('-A FORWARD')).length, 4, 'skeleton still not duplicated (two jumps per family now)');
    await fw.removeAll();
  });
});
