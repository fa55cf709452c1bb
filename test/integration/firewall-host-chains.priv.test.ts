/**
 * tsnet's let-through rules in another firewall's iptables chains, against a real kernel with real
 * packets, both backends (test/helpers/firewall-topology.ts): a host laid out as Docker leaves it
 * (FORWARD policy DROP, DOCKER-USER first in FORWARD with an admin's rule and Docker's RETURN), then
 * one with only the drop policy (ufw, an admin). Container egress needs the rules; a missing rule
 * shows as `blocked`; removing the last network leaves no tsnet rule in those chains and everyone
 * else's rules as they were.
 */
import t from 'tap';
import type { Firewall } from '../../sys/firewall/api.js';
import { createIptablesFirewall } from '../../sys/firewall/iptables.js';
import { createNftablesFirewall } from '../../sys/firewall/nftables.js';
import { NET1, NET2, buildWorld } from '../helpers/firewall-topology.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';
import { reachable, startServer } from '../helpers/traffic.js';

const save = async (host: IsolatedHost): Promise<string[]> => (await host.exec(['iptables-save', '-t', 'filter'])).stdout.split('\n').filter((l) => l.startsWith('-A ') || /^:\S+ DROP/.test(l));
const ours = (lines: readonly string[]): string[] => lines.filter((l) => l.includes('tsnet:net:') && /^-A (FORWARD|DOCKER-USER) /.test(l));
/** Everyone else's rules in the filter table (tsnet's own chains and tagged rules left out). */
const others = (lines: readonly string[]): string[] => lines.filter((l) => !/tsnet|TSNET/.test(l));

const BACKENDS: Record<string, (netns: IsolatedHost['ns']) => Firewall> = {
  nftables: (netns) => createNftablesFirewall({ netns }),
  iptables: (netns) => createIptablesFirewall({ netns }),
};

for (const [backend, make] of Object.entries(BACKENDS)) {
  t.test(`${backend}: a Docker-like host, then a drop policy alone`, { skip: skipUnlessRoot }, async (t) => {
    await withIsolatedHost(async (host) => {
      const w = await buildWorld(host);
      await startServer(host, w.n, 'tcp', '192.168.77.2', 7777);
      const sh = (...argv: string[]): Promise<unknown> => host.exec(argv as [string, ...string[]]);
      await sh('iptables', '-P', 'FORWARD', 'DROP');
      await sh('iptables', '-N', 'DOCKER-USER');
      await sh('iptables', '-A', 'DOCKER-USER', '-s', '203.0.113.0/24', '-j', 'DROP');
      await sh('iptables', '-A', 'DOCKER-USER', '-j', 'RETURN');
      await sh('iptables', '-I', 'FORWARD', '-j', 'DOCKER-USER');
      const fw = make(host.ns);
      t.notOk(await reachable(w.c, 'tcp', '192.168.77.2', 7777), 'premise: the drop policy cuts a bridge off');
      const before = others(await save(host));

      await fw.ensureNetwork(NET1);
      await fw.ensureNetwork(NET2);
      const inDocker = ours(await save(host));
      t.same(inDocker.map((l) => l.split(' ').slice(0, 4).join(' ')), ['-A DOCKER-USER -i tsbr0', '-A DOCKER-USER -o tsbr0', '-A DOCKER-USER -i tsbr1', '-A DOCKER-USER -o tsbr1'], 'two rules per network, in DOCKER-USER');
      const chain = (await save(host)).filter((l) => l.startsWith('-A DOCKER-USER'));
      t.equal(chain[0], '-A DOCKER-USER -s 203.0.113.0/24 -j DROP', 'the admin\'s rule keeps its precedence');
      t.equal(chain.at(-1), '-A DOCKER-USER -j RETURN', 'Docker\'s RETURN stays last');
      t.ok(await reachable(w.c, 'tcp', '192.168.77.2', 7777, 2000), 'egress through the drop policy');
      t.notOk(await reachable(w.d, 'tcp', '10.88.0.2', 1, 800), 'isolation still tsnet\'s: network 2 cannot reach network 1');
      t.equal((await fw.list()).blocked, undefined, 'nothing blocked');

      await sh('iptables', '-D', 'DOCKER-USER', '-i', 'tsbr0', '-m', 'comment', '--comment', 'tsnet:net:n1', '-j', backend === 'iptables' ? 'TSNET-FORWARD' : 'ACCEPT');
      t.same((await fw.list()).blocked, ['n1'], 'a deleted rule shows as blocked');
      await fw.ensureNetwork(NET1);
      t.equal((await fw.list()).blocked, undefined, 'ensureNetwork puts it back');
      t.equal(ours(await save(host)).length, 4, 'exactly once');

      // Docker goes away (its chain with it): the policy alone remains.
      await sh('iptables', '-D', 'FORWARD', '-j', 'DOCKER-USER');
      t.same((await fw.list()).blocked, backend === 'iptables' ? undefined : ['n1', 'n2'], backend === 'iptables' ? 'iptables backend: tsnet\'s own jumps head FORWARD' : 'rules in a chain nobody jumps to do not count');
      await fw.ensureNetwork(NET1);
      await fw.ensureNetwork(NET2);
      const moved = ours(await save(host));
      t.same(moved.map((l) => l.split(' ').slice(0, 4).join(' ')), backend === 'iptables' ? [] : ['-A FORWARD -i tsbr1', '-A FORWARD -o tsbr1', '-A FORWARD -i tsbr0', '-A FORWARD -o tsbr0'], backend === 'iptables' ? 'none needed' : 'moved to the head of FORWARD');
      t.ok(await reachable(w.c, 'tcp', '192.168.77.2', 7777, 2000), 'egress through the drop policy alone');

      await fw.removeNetwork(NET1.networkId);
      await fw.removeNetwork(NET2.networkId);
      t.same(ours(await save(host)), [], 'the last network gone: no tsnet rule in FORWARD or DOCKER-USER');
      await sh('iptables', '-I', 'FORWARD', '-j', 'DOCKER-USER');
      t.same(others(await save(host)), before, 'everyone else\'s rules and the policy as before');
      await fw.removeAll();
    });
  });
}
