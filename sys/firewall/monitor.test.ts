import t from 'tap';
import { isLossEvent } from './monitor.js';

t.test('which nft monitor lines mean rules were taken away', async (t) => {
  for (const l of ['delete table inet tsnet', 'delete chain ip nat TSNET-DNAT', 'delete rule ip nat OUTPUT handle 3', 'flush ruleset', 'delete map inet tsnet dnat4', 'flush table inet tsnet', 'flush chain inet tsnet ports']) t.ok(isLossEvent(l), l);
  for (const l of ['delete element inet tsnet dnat4 { tcp . 8080 : 10.0.0.2 . 80 }', 'add rule inet tsnet output ip6 daddr ::1 return', 'add table inet tsnet', '# new generation 7 by process 123 (nft)', '']) t.notOk(isLossEvent(l), JSON.stringify(l));
});
