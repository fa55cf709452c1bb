/**
 * tsnet on a host whose iptables FORWARD policy is DROP before tsnet starts (ufw, an admin), no
 * Docker, both firewall backends, through the built CLI, real packets: the same connectivity as
 * beside Docker; the network gone, its rules in FORWARD are gone and the policy is still DROP.
 */
import t from 'tap';
import { cliFor } from '../helpers/cli.js';
import { BACKENDS, connectivity, containers, internet, labBridge, othersRules, teardown, tsnetLines } from '../helpers/coexist.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';

for (const backend of BACKENDS) {
  t.test(`${backend}: iptables -P FORWARD DROP before tsnet starts (ufw, an admin), no Docker`, { skip: skipUnlessRoot }, async (t) => {
    await withIsolatedHost(async (host) => {
      const cli = cliFor(host, { firewall: backend });
      host.defer(() => cli('rm', '-f', 'a', 'b'));
      host.defer(() => cli('daemon', '--stop'));
      await host.exec(['iptables', '-P', 'FORWARD', 'DROP']);
      await host.exec(['ip6tables', '-P', 'FORWARD', 'DROP']);
      const inet = await internet(host);
      const before = await othersRules(host);
      const bIp = await containers(cli);
      const br = await labBridge(cli);
      t.equal((await tsnetLines(host, 'FORWARD', br)).length, backend === 'nftables' ? 2 : 0, backend === 'nftables' ? 'two tagged accepts at the head of FORWARD' : 'none needed: tsnet\'s own chain heads FORWARD');
      await connectivity(t, 'FORWARD policy DROP', cli, inet, bIp);
      await teardown(cli);
      t.same(await tsnetLines(host, 'FORWARD', br), [], 'the network gone: its rules in FORWARD are gone');
      t.same(await othersRules(host), before, 'the policy and everything else as before');
      t.match((await host.exec(['iptables-save', '-t', 'filter'])).stdout, /^:FORWARD DROP/m, 'the policy is still DROP');
    });
  });
}

