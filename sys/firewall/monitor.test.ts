import t from 'tap';
import { isHostFirewallEvent, isLossEvent } from './monitor.js';

t.test('which nft monitor lines mean rules were taken away', async (t) => {
  for (const l of ['delete table inet tsnet', 'delete chain ip nat TSNET-DNAT', 'delete rule ip nat OUTPUT handle 3', 'flush ruleset', 'delete map inet tsnet dnat4', 'flush table inet tsnet', 'flush chain inet tsnet ports']) t.ok(isLossEvent(l), l);
  for (const l of ['delete element inet tsnet dnat4 { tcp . 8080 : 10.0.0.2 . 80 }', 'add rule inet tsnet output ip6 daddr ::1 return', 'add table inet tsnet', '# new generation 7 by process 123 (nft)', '']) t.notOk(isLossEvent(l), JSON.stringify(l));
});

t.test('which nft monitor lines mean iptables forward filtering may have changed', async (t) => {
  for (const l of ['add chain ip filter FORWARD { type filter hook forward priority filter; policy drop; }', 'create chain ip filter DOCKER-USER', 'add chain ip6 filter FORWARD { type filter hook forward priority filter; policy drop; }']) t.ok(isHostFirewallEvent(l), l);
  for (const l of ['insert rule ip filter DOCKER-USER iifname "br0" counter packets 0 bytes 0 accept', 'add chain inet tsnet nw-x-fwd-in', 'create chain ip nat DOCKER', 'add element inet tsnet ports4_any { tcp . 80 }']) t.notOk(isHostFirewallEvent(l), l);
});
