/** The impairment plan (tc commands) is pure: tbf for a rate, netem for delay/jitter/loss, netem + tbf child for both. */
import t from 'tap';
import type { IfName } from '../core/net.js';
import { impairPlan, needsNetem } from './tc.js';

const dev = 'eth1' as IfName;

t.test('rate only: a tbf root, burst 10 ms of the rate', async (t) => {
  t.same(impairPlan(dev, { rate: 10_000_000 }), [['qdisc', 'replace', 'dev', 'eth1', 'root', 'tbf', 'rate', '10000000bit', 'burst', '12500', 'latency', '25ms']]);
  t.same(impairPlan(dev, { rate: 64_000 })[0]?.slice(-4), ['burst', '1600', 'latency', '25ms'], 'at least one frame');
});

t.test('delay, jitter, loss: a netem root', async (t) => {
  t.same(impairPlan(dev, { delayUs: 20_000, jitterUs: 2000, lossPct: 1 }), [['qdisc', 'replace', 'dev', 'eth1', 'root', 'handle', '1:', 'netem', 'delay', '20000us', '2000us', 'loss', '1%']]);
  t.same(impairPlan(dev, { lossPct: 0.5 }), [['qdisc', 'replace', 'dev', 'eth1', 'root', 'handle', '1:', 'netem', 'loss', '0.5%']]);
});

t.test('netem and a rate: tbf as netem\'s child', async (t) => {
  t.same(impairPlan(dev, { rate: 1_000_000, delayUs: 5000 }), [
    ['qdisc', 'replace', 'dev', 'eth1', 'root', 'handle', '1:', 'netem', 'delay', '5000us'],
    ['qdisc', 'replace', 'dev', 'eth1', 'parent', '1:1', 'handle', '10:', 'tbf', 'rate', '1000000bit', 'burst', '1600', 'latency', '25ms'],
  ]);
});

t.test('nothing: the root qdisc is deleted', async (t) => {
  t.same(impairPlan(dev, {}), [['qdisc', 'del', 'dev', 'eth1', 'root']]);
});

t.test('bad values are refused naming the field', async (t) => {
  t.throws(() => impairPlan(dev, { rate: 0 }), /impair\.rate/);
  t.throws(() => impairPlan(dev, { rate: 1.5 }), /impair\.rate/);
  t.throws(() => impairPlan(dev, { delayUs: -1 }), /impair\.delay/);
  t.throws(() => impairPlan(dev, { jitterUs: 10 }), /impair\.jitter: needs a delay/);
  t.throws(() => impairPlan(dev, { lossPct: 101 }), /impair\.loss/);
  t.throws(() => impairPlan('bad name' as IfName, { rate: 1000 }), /dev/);
});

t.test('which impairments need netem', async (t) => {
  t.equal(needsNetem({ rate: 1 }), false);
  t.equal(needsNetem({ delayUs: 1 }), true);
  t.equal(needsNetem({ lossPct: 0 }), true);
});
