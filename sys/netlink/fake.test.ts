import t from 'tap';
import { TsnetError } from '../../core/errors.js';
import { parseIfName, parsePrefix } from '../../core/net.js';
import { netlinkContract, type WithNetlinkEnv } from '../../test/contracts/netlink.js';
import { createFakeNetlink } from './fake.js';

const withFake: WithNetlinkEnv = async (fn) => {
  const world = createFakeNetlink();
  const hostNs = world.addNetns();
  await fn({
    netlinkFor: world.netlinkFor,
    sysctlFor: world.sysctlFor,
    hostNs,
    newNetns: async () => world.addNetns(),
    removeNetns: async (ns) => {
      await world.netlinkFor.release(ns);
      world.removeNetns(ns);
    },
  });
};

t.test('contract: fake netlink', async (t) => {
  netlinkContract(t, withFake);
});

const n = parseIfName;

t.test('fake: failNext injects one failure, for one op (and namespace), without effect', async (t) => {
  const w = createFakeNetlink();
  const a = w.addNetns();
  const b = w.addNetns();
  const boom = new TsnetError('EXHAUSTED', 'injected');
  w.failNext('addBridge', boom, { ns: b });
  await w.netlinkFor(a).addBridge(n('br0'));
  await t.rejects(w.netlinkFor(b).addBridge(n('br0')), boom);
  t.equal(await w.netlinkFor(b).getLink(n('br0')), undefined, 'the failed op had no effect');
  await w.netlinkFor(b).addBridge(n('br0'));
  t.pass('only the next call failed');
  w.failNext('listRoutes', boom);
  await t.rejects(w.netlinkFor(a).listRoutes(), boom, 'reads can fail too');
  w.failNext('setLink', boom);
  const res = await w.netlinkFor(a).batch([
    { op: 'setLink', name: n('br0'), changes: { up: true } },
    { op: 'setLink', name: n('br0'), changes: { up: true } },
  ]);
  t.same(res.map((r) => r.ok), [false, true], 'inside a batch, per op');
  t.equal(res[0]?.ok === false ? res[0].error : undefined, boom);
  w.failNext('sysctlSet', boom);
  await t.rejects(w.sysctlFor(a).set({ 'net.ipv4.ip_forward': 1 }), boom);
});

t.test('fake: calls are recorded in order with their namespace', async (t) => {
  const w = createFakeNetlink();
  const a = w.addNetns('/run/x/a');
  await w.netlinkFor(a).addBridge(n('br0'));
  await w.netlinkFor(a).addAddr(n('br0'), parsePrefix('10.0.0.1/24'));
  await w.netlinkFor({ kind: 'host' }).getLink(n('lo'));
  t.same(w.calls.map((c) => `${c.ns} ${c.op}`), ['/run/x/a addBridge', '/run/x/a addAddr', 'host getLink']);
  w.clearCalls();
  t.same(w.calls, []);
  t.throws(() => w.addNetns('/run/x/a'), { code: 'ALREADY_EXISTS' });
  t.ok(w.hasNetns(a));
  w.removeNetns(a);
  t.notOk(w.hasNetns(a));
});

t.test('fake: a bridge has carrier with no ports, or with a port that has carrier', async (t) => {
  const w = createFakeNetlink();
  const nl = w.netlinkFor({ kind: 'host' });
  await nl.addBridge(n('br0'));
  await nl.setLink(n('br0'), { up: true });
  t.equal((await nl.getLink(n('br0')))?.carrier, true);
  await nl.addVeth({ name: n('v0'), peer: n('v1') });
  await nl.setLink(n('v0'), { master: n('br0'), up: true });
  t.equal((await nl.getLink(n('br0')))?.carrier, false, 'only port has no carrier');
  await nl.setLink(n('v1'), { up: true });
  t.equal((await nl.getLink(n('br0')))?.carrier, true);
  await nl.removeLink(n('br0'));
  t.equal((await nl.getLink(n('v0')))?.master, undefined, 'ports are detached when the bridge goes');
});
