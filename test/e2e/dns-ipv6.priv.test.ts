/**
 * The embedded resolver on a dual-stack network, end to end through the CLI, with real packets
 * from inside container namespaces: it listens on the IPv6 gateway too, answers AAAA with the
 * containers' IPv6 addresses (over IPv6 and IPv4 transport, UDP and TCP), PTR under ip6.arpa, and
 * only to clients on the network.
 */
import t from 'tap';
import type { NetnsRef } from '../../core/net.js';
import { cliFor, okCli } from '../helpers/cli.js';
import type { DnsResult } from '../helpers/dns-client.js';
import { dnsTool } from '../helpers/dns-tool-run.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';

const tool = await dnsTool('dns-tool-v6');
t.teardown(() => tool.remove());
const ask = tool.ask;
const addrs = (r: DnsResult | undefined): string[] => (r?.answers ?? []).map((a) => a.data);

/** The nibble-reversed ip6.arpa name of a full (expanded) IPv6 address. */
function ip6arpa(addr: string): string {
  const [head = '', tail = ''] = addr.split('::');
  const h = head === '' ? [] : head.split(':');
  const tl = tail === '' ? [] : tail.split(':');
  const groups = addr.includes('::') ? [...h, ...Array<string>(8 - h.length - tl.length).fill('0'), ...tl] : h;
  return `${groups.map((g) => g.padStart(4, '0')).join('').split('').reverse().join('.')}.ip6.arpa`;
}

t.test('dual-stack network: AAAA, the IPv6 gateway as a server, ip6.arpa PTR, strangers unanswered', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cli = cliFor(host, { dnsUpstream: '127.0.0.1:9' });
    const ok = okCli(cli);
    host.defer(async () => {
      const ids = (await cli('ps', '-aq')).stdout.split('\n').filter(Boolean);
      if (ids.length > 0) await cli('rm', '-f', ...ids);
      await cli('daemon', '--stop');
    });
    await ok('network', 'create', 'lab6', '--ipv6', '--subnet', '10.79.0.0/24', '--subnet', 'fd79::/64');
    await ok('run', '-d', '--name', 'client', '--network', 'lab6', '--', 'sleep', '600');
    await ok('run', '-d', '--name', 'web', '--network', 'lab6', '--network-alias', 'www', '--', 'sleep', '600');
    const info = (name: string): Promise<{ ns: NetnsRef; v4: string; v6: string }> => ok('inspect', name).then((out) => {
      const s = (JSON.parse(out) as { NetworkSettings: { SandboxKey: string; Networks: Record<string, { IPAddress: string; GlobalIPv6Address: string }> } }[])[0]?.NetworkSettings;
      return { ns: { kind: 'path', path: s?.SandboxKey ?? '' }, v4: s?.Networks['lab6']?.IPAddress ?? '', v6: s?.Networks['lab6']?.GlobalIPv6Address ?? '' };
    });
    const client = await info('client');
    const web = await info('web');
    t.match(web.v6, /^fd79::/, 'web has an IPv6 address');

    const [aaaa, a, alias6, ptr6, tcp6] = await ask(client.ns, 'fd79::1', [
      { name: 'web', type: 'AAAA' },
      { name: 'web', type: 'A' },
      { name: 'www', type: 'AAAA' },
      { name: ip6arpa(web.v6), type: 'PTR' },
      { name: 'web', type: 'AAAA', tcp: true },
    ]);
    t.same(addrs(aaaa), [web.v6], 'AAAA over IPv6 transport, from the IPv6 gateway');
    t.same(addrs(a), [web.v4], 'A over IPv6 transport');
    t.same(addrs(alias6), [web.v6], 'an alias has the AAAA too');
    t.same(addrs(ptr6), ['web'], 'PTR under ip6.arpa');
    t.same(addrs(tcp6), [web.v6], 'TCP over IPv6');
    const [viaV4] = await ask(client.ns, '10.79.0.1', [{ name: 'web', type: 'AAAA' }]);
    t.same(addrs(viaV4), [web.v6], 'AAAA over IPv4 transport');

    // A stranger: a namespace wired to the bridge with an address that is no endpoint.
    const stranger = await host.newNetns('stranger');
    if (stranger.kind !== 'path') throw new Error('expected a path');
    const bridge = (JSON.parse(await ok('network', 'inspect', 'lab6')) as { Options?: Record<string, string> }[])[0]?.Options?.['com.docker.network.bridge.name'] ?? '';
    t.not(bridge, '', 'the network has a bridge');
    await host.exec(['ip', 'link', 'add', 'sx0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', stranger.path]);
    await host.exec(['ip', 'link', 'set', 'sx0', 'master', bridge, 'up']);
    await host.execIn(stranger, ['ip', 'addr', 'add', 'fd79::bad/64', 'dev', 'eth0', 'nodad']);
    await host.execIn(stranger, ['ip', 'link', 'set', 'eth0', 'up']);
    const [none, tcpNone] = await ask(stranger, 'fd79::1', [{ name: 'web', type: 'AAAA' }, { name: 'web', type: 'AAAA', tcp: true }]);
    t.equal(none?.error, 'timeout', 'a client that is no endpoint of the network gets no answer');
    t.equal(tcpNone?.error, 'closed', 'over TCP it reaches the resolver (so the path works) and is closed without an answer');
  });
});
