/**
 * tsnet beside a real firewalld (Debian firewalld, nftables backend; no systemd: its own D-Bus bus
 * and a copy of its configuration in the isolated host), whose forward chain rejects interfaces of
 * no zone, both firewall backends, through the built CLI, real packets: the same connectivity as
 * beside Docker, with tsnet's bridges in tsnet's zone; a binding taken away comes back (the daemon,
 * else `tsnet firewall reload`); connectivity after `firewall-cmd --reload`; the network gone, its
 * binding is gone.
 */
import t from 'tap';
import { cliFor, okCli } from '../helpers/cli.js';
import { BACKENDS, connectivity, containers, internet, labBridge, teardown } from '../helpers/coexist.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';
import { firewalldMissing, startFirewalld } from '../helpers/firewalld.js';

const noFirewalld = await firewalldMissing();
for (const backend of BACKENDS) {
  t.test(`${backend}: a real firewalld`, { skip: skipUnlessRoot || noFirewalld }, async (t) => {
    await withIsolatedHost(async (host) => {
      const fwd = await startFirewalld(host);
      const cli = cliFor(host, { firewall: backend, env: { DBUS_SYSTEM_BUS_ADDRESS: fwd.bus } });
      host.defer(() => cli('rm', '-f', 'a', 'b'));
      host.defer(() => cli('daemon', '--stop'));
      const inet = await internet(host);
      const bIp = await containers(cli);
      const br = await labBridge(cli);
      t.match(await fwd.cmd('--zone=tsnet', '--list-interfaces'), new RegExp(`(^| )${br}( |$)`), `${br} is in firewalld zone tsnet`);
      t.equal(await fwd.cmd('--zone=tsnet', '--get-target').catch(() => fwd.cmd('--permanent', '--zone=tsnet', '--get-target')), 'ACCEPT', 'zone tsnet accepts');
      t.match(await fwd.cmd('--get-policies'), /\btsnet-forwarding\b/, 'policy tsnet-forwarding exists');
      t.equal(await fwd.cmd('--get-default-zone'), 'public', 'firewalld\'s default zone is untouched');
      await connectivity(t, 'with firewalld', cli, inet, bIp);

      // Someone takes the binding away (a reload, NetworkManager): the daemon binds it again.
      await fwd.cmd('--zone=tsnet', `--remove-interface=${br}`);
      let bound = false;
      for (let i = 0; i < 50 && !bound; i++) {
        await new Promise((r) => setTimeout(r, 100));
        bound = (await fwd.cmd('--zone=tsnet', '--list-interfaces')).split(' ').includes(br);
      }
      if (!bound) await okCli(cli)('firewall', 'reload');
      t.ok(bound || (await fwd.cmd('--zone=tsnet', '--list-interfaces')).split(' ').includes(br), bound ? 'the daemon re-bound the bridge by itself' : '`tsnet firewall reload` re-bound the bridge');
      await fwd.cmd('--reload');
      await connectivity(t, 'after firewall-cmd --reload', cli, inet, bIp);

      await teardown(cli);
      t.notOk((await fwd.cmd('--zone=tsnet', '--list-interfaces')).split(' ').includes(br), 'the network gone: its binding is gone');
    });
  });
}
