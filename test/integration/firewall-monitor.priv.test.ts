/** The ruleset monitor against the real kernel: flushes and deletions are reported, element removals are not. */
import t from 'tap';
import { watchRuleset } from '../../sys/firewall/monitor.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('nft monitor: flush ruleset, a deleted chain and iptables -F are losses; element removal is not', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const ns = await host.newNetns('mon');
    const nft = (cmd: string): Promise<unknown> => host.execIn(ns, ['nft', cmd]);
    await nft('add table inet tsnet ; add map inet tsnet m { type inet_service : ipv4_addr ; } ; add chain inet tsnet c');
    let losses = 0;
    const mon = watchRuleset(ns, { onLoss: () => { losses++; }, debounceMs: 100 });
    host.defer(() => mon.close());
    // The monitor is ready once it reports something: poke until the first loss arrives.
    for (let i = 0; i < 50 && losses === 0; i++) {
      await nft('add chain inet tsnet probe ; delete chain inet tsnet probe');
      await sleep(150);
    }
    t.ok(losses > 0, 'a deleted chain is reported');
    const wait = async (): Promise<number> => {
      const before = losses;
      for (let i = 0; i < 30 && losses === before; i++) await sleep(100);
      return losses - before;
    };
    await nft('add element inet tsnet m { 8080 : 10.0.0.2 }');
    const settle = losses;
    await nft('delete element inet tsnet m { 8080 }');
    await sleep(600);
    t.equal(losses, settle, 'removing a map element is not a loss');
    await nft('flush ruleset');
    t.equal(await wait(), 1, 'flush ruleset: reported once (debounced)');
    await host.execIn(ns, ['iptables', '-t', 'nat', '-N', 'TSNET-DNAT']);
    await host.execIn(ns, ['iptables', '-t', 'nat', '-A', 'OUTPUT', '-j', 'TSNET-DNAT']);
    await sleep(300);
    const beforeF = losses;
    await host.execIn(ns, ['iptables', '-t', 'nat', '-F']);
    for (let i = 0; i < 30 && losses === beforeF; i++) await sleep(100);
    t.ok(losses > beforeF, 'iptables -F is reported');
    await mon.close();
    const after = losses;
    await nft('add table inet x ; delete table inet x');
    await sleep(400);
    t.equal(losses, after, 'nothing after close');
  });
});
