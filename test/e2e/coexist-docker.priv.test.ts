/**
 * tsnet beside a real dockerd at its defaults, started first in the isolated host (it sets the
 * iptables FORWARD policy to drop when it turns forwarding on; br_netfilter sends bridged frames
 * through FORWARD), both firewall backends, through the built CLI, real packets: two containers on
 * one tsnet network by address and by name, a published port from a neighbour, egress to a
 * neighbour "internet"; the same after the daemon's watcher put back the rules someone flushed out
 * of DOCKER-USER (no command typed), and after a dockerd restart; when the network goes, its rules
 * in DOCKER-USER are gone and Docker's own rules are as before.
 */
import t from 'tap';
import { cliFor } from '../helpers/cli.js';
import { BACKENDS, connectivity, containers, internet, labBridge, othersRules, teardown, tsnetLines } from '../helpers/coexist.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';
import { startDockerd } from '../helpers/dockerd.js';

for (const backend of BACKENDS) {
  t.test(`${backend}: a real dockerd at its defaults on the same host`, { skip: skipUnlessRoot }, async (t) => {
    await withIsolatedHost(async (host) => {
      const cli = cliFor(host, { firewall: backend });
      host.defer(() => cli('rm', '-f', 'a', 'b'));
      host.defer(() => cli('daemon', '--stop'));
      const inet = await internet(host);
      const d = await startDockerd(host, { plugin: false });
      const save = (await host.exec(['iptables-save', '-t', 'filter'])).stdout;
      t.match(save, /^:FORWARD DROP/m, 'premise: Docker set the FORWARD policy to DROP');
      t.match(save, /^-A FORWARD -j DOCKER-USER$/m, 'premise: Docker\'s user chain is first in FORWARD');
      t.equal((await host.exec(['sysctl', '-n', 'net.bridge.bridge-nf-call-iptables'])).stdout.trim(), '1', 'premise: br_netfilter sends bridged frames through iptables');
      const before = await othersRules(host);

      const bIp = await containers(cli);
      const br = await labBridge(cli);
      t.equal((await tsnetLines(host, 'DOCKER-USER', br)).length, 2, `two tagged rules in DOCKER-USER for ${br}`);
      t.equal((await tsnetLines(host, 'DOCKER-USER', 'tsnet0')).length, 2, 'and two for the predefined network bridge (tsnet0)');
      t.same(await tsnetLines(host, 'FORWARD'), [], 'none of tsnet\'s let-through rules in FORWARD itself');
      await connectivity(t, 'with Docker', cli, inet, bIp);

      // Someone rewrites Docker's user chain: the daemon (started by `run`) puts tsnet's rules back.
      await host.exec(['iptables', '-F', 'DOCKER-USER']);
      await host.exec(['iptables', '-A', 'DOCKER-USER', '-j', 'RETURN']);
      let back = 0;
      for (let i = 0; i < 50 && back < 2; i++) {
        await new Promise((r) => setTimeout(r, 100));
        back = (await tsnetLines(host, 'DOCKER-USER', br)).length;
      }
      t.equal(back, 2, 'the watcher restored the DOCKER-USER rules within 5 s, no command typed');
      await connectivity(t, 'after DOCKER-USER was flushed', cli, inet, bIp);

      await d.restart();
      await connectivity(t, 'after a dockerd restart', cli, inet, bIp);
      t.equal((await tsnetLines(host, 'DOCKER-USER', br)).length, 2, 'still exactly two rules in DOCKER-USER for the network');
      const dockerUser = (await host.exec(['iptables-save', '-t', 'filter'])).stdout.split('\n').filter((l) => l.startsWith('-A DOCKER-USER'));
      t.equal(dockerUser.at(-1), '-A DOCKER-USER -j RETURN', 'tsnet\'s rules come before Docker\'s RETURN');

      await teardown(cli);
      t.same(await tsnetLines(host, 'DOCKER-USER', br), [], 'the network gone: its rules in DOCKER-USER are gone');
      t.equal((await tsnetLines(host, 'DOCKER-USER')).length, 2, 'only the predefined network\'s remain (it is never removed)');
      t.same(await othersRules(host), before, 'Docker\'s own rules (every table, both families) are as before');
    });
  });

}
