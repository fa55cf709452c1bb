/**
 * Point-to-point links and switches over the fake kernel: a veth pair straight between two
 * sandboxes with names, MACs, MTU, addresses and impairments; switch ports; records written
 * before the kernel is touched; removal idempotent and with either sandbox; crash leftovers.
 */
import t from 'tap';
import { TsnetError } from '../core/errors.js';
import type { IfName, NetnsRef } from '../core/net.js';
import type { Impairment, TcFor } from '../sys/api.js';
import { makeWorld, type World } from '../test/helpers/cnm-world.js';

const ifn = (s: string): IfName => s as IfName;

function tcRecorder(): { tc: TcFor; calls: { ns: NetnsRef; dev: string; imp: Impairment }[] } {
  const calls: { ns: NetnsRef; dev: string; imp: Impairment }[] = [];
  return { calls, tc: (ns) => ({ ns, shape: async () => undefined, impair: async (dev, imp) => { calls.push({ ns, dev, imp }); } }) };
}

async function twoSandboxes(w: World): Promise<[{ id: string; ns: NetnsRef }, { id: string; ns: NetnsRef }]> {
  const a = await w.controller.createSandbox({ name: 'a', mode: { kind: 'none' } });
  const b = await w.controller.createSandbox({ name: 'b', mode: { kind: 'none' } });
  return [{ id: a.record.id, ns: a.netns }, { id: b.record.id, ns: b.netns }];
}

t.test('a link between two sandboxes: one pair, both ends configured, recorded', async (t) => {
  const { tc, calls } = tcRecorder();
  const w = makeWorld({ tc });
  const [a, b] = await twoSandboxes(w);
  const rec = await w.controller.createLink({
    id: 'l1', mtu: 9000, labels: { x: 'y' },
    ends: [
      { sandbox: 'a', ifName: 'eth1', addresses: ['10.0.12.1/30', 'fd00:12::1/64'], mac: '02:00:00:00:12:01', impair: { rate: 10_000_000 } },
      { sandbox: b.id, ifName: 'eth1', addresses: ['10.0.12.2/30'], impair: { rate: 10_000_000 } },
    ],
  });
  t.equal(rec.status, 'ready');
  t.same(rec.labels, { x: 'y' });
  const la = await w.kernel.netlinkFor(a.ns).getLink(ifn('eth1'));
  const lb = await w.kernel.netlinkFor(b.ns).getLink(ifn('eth1'));
  t.equal(la?.kind, 'veth');
  t.equal(la?.mtu, 9000);
  t.equal(lb?.mtu, 9000);
  t.equal(la?.mac, '02:00:00:00:12:01');
  t.equal(lb?.mac, rec.ends[1].mac, 'the generated MAC is recorded');
  t.ok(la?.up && lb?.up, 'both ends up');
  t.same((await w.kernel.netlinkFor(a.ns).listAddrs(ifn('eth1'))).filter((x) => x.scope === 'global').map((x) => x.prefix).sort(), ['10.0.12.1/30', 'fd00:12::1/64']);
  t.same((await w.kernel.netlinkFor(b.ns).listAddrs(ifn('eth1'))).filter((x) => x.scope === 'global').map((x) => x.prefix), ['10.0.12.2/30']);
  t.same(calls.map((c) => [c.dev, c.imp.rate]), [['eth1', 10_000_000], ['eth1', 10_000_000]], 'impairment on both ends');
  const made = w.kernel.calls.filter((c) => c.op === 'addVeth');
  t.equal(made.length, 1, 'the pair is made once, its peer straight in the other namespace');
  t.ok(w.kernel.calls.some((c) => c.op === 'sysctlSet'), 'IPv6 turned on for the end with an IPv6 address');
  t.same((await w.controller.listLinks()).map((l) => l.id), ['l1']);

  await w.controller.impairLink('l1', 1, { rate: 5_000_000 });
  t.same((await w.controller.listLinks())[0]?.ends.map((e) => e.impair?.rate), [10_000_000, 5_000_000], 'one end changed');
  await w.controller.impairLink('l1', 0, {});
  t.same((await w.controller.listLinks())[0]?.ends[0].impair, undefined, 'an empty impairment is none');

  await w.controller.deleteLink('l1');
  t.equal(await w.kernel.netlinkFor(a.ns).getLink(ifn('eth1')), undefined);
  t.equal(await w.kernel.netlinkFor(b.ns).getLink(ifn('eth1')), undefined);
  t.same(await w.controller.listLinks(), []);
  await w.controller.deleteLink('l1');
  t.pass('deleting again succeeds');
});

t.test('switches: a bridge with ports; deleting it takes its links', async (t) => {
  const w = makeWorld();
  const [a] = await twoSandboxes(w);
  const host = w.kernel.netlinkFor({ kind: 'host' });
  await host.addBridge(ifn('mine0'));
  await t.rejects(w.controller.createSwitch({ name: 'mine0' }), { code: 'ALREADY_EXISTS' }, 'an interface tsnet did not make is never taken over');
  const sw = await w.controller.createSwitch({ name: 'lab-s1', labels: { k: 'v' } });
  await t.rejects(w.controller.createSwitch({ name: 'lab-s1' }), { code: 'ALREADY_EXISTS' });
  t.equal((await host.getLink(ifn('lab-s1')))?.kind, 'bridge');
  await w.controller.createSwitch({ name: 'lab-s2' });
  const l1 = await w.controller.createLink({ id: 'p1', ends: [{ sandbox: a.id, ifName: 'eth0', addresses: ['10.0.0.1/8'] }, { switch: 'lab-s1' }] });
  const port = l1.ends[1];
  t.equal(port.kind, 'switch');
  t.equal((await host.getLink(port.ifName))?.master, 'lab-s1', 'the host end is a port of the bridge');
  const l2 = await w.controller.createLink({ id: 'p2', ends: [{ switch: sw.id }, { switch: 'lab-s2' }] });
  t.equal((await host.getLink(l2.ends[0].ifName))?.master, 'lab-s1');
  t.equal((await host.getLink(l2.ends[1].ifName))?.master, 'lab-s2');
  await w.controller.deleteSwitch('lab-s1');
  t.equal(await host.getLink(ifn('lab-s1')), undefined);
  t.same(await w.controller.listLinks(), [], 'its links went with it');
  t.equal(await w.kernel.netlinkFor(a.ns).getLink(ifn('eth0')), undefined);
  t.ok(await host.getLink(ifn('mine0')), 'the foreign bridge is untouched');
  await w.controller.deleteSwitch('lab-s1');
  t.pass('deleting again succeeds');
});

t.test('removed with either sandbox', async (t) => {
  const w = makeWorld();
  const [a, b] = await twoSandboxes(w);
  await w.controller.createSwitch({ name: 'sw0' });
  await w.controller.createLink({ id: 'ab', ends: [{ sandbox: 'a', ifName: 'eth1' }, { sandbox: 'b', ifName: 'eth1' }] });
  const toSw = await w.controller.createLink({ id: 'bs', ends: [{ sandbox: 'b', ifName: 'eth2' }, { switch: 'sw0' }] });
  await w.controller.deleteSandbox('b');
  t.same(await w.controller.listLinks(), [], 'both of b\'s links are gone');
  t.equal(await w.kernel.netlinkFor(a.ns).getLink(ifn('eth1')), undefined, 'a\'s end went with the pair');
  t.equal(await w.kernel.netlinkFor({ kind: 'host' }).getLink(toSw.ends[1].ifName), undefined, 'the switch port went with the pair');
  t.notOk(w.kernel.hasNetns(b.ns));
});

t.test('bad requests change nothing; a taken name is never removed by the undo', async (t) => {
  const w = makeWorld();
  const [a] = await twoSandboxes(w);
  await w.controller.createNetwork({ name: 'lan', subnets: [{ subnet: '10.9.0.0/24' }] });
  await w.controller.connect('a', 'lan');
  await t.rejects(w.controller.createLink({ ends: [{ sandbox: 'a', ifName: 'eth0' }, { sandbox: 'b', ifName: 'eth1' }] }), { code: 'ALREADY_EXISTS' }, 'eth0 is a\'s endpoint');
  t.ok(await w.kernel.netlinkFor(a.ns).getLink(ifn('eth0')), 'the endpoint\'s interface is still there');
  t.same(await w.controller.listLinks(), []);
  await t.rejects(w.controller.createLink({ ends: [{ sandbox: 'a', ifName: 'eth1' }, { sandbox: 'nope', ifName: 'eth1' }] }), { code: 'NOT_FOUND' });
  await t.rejects(w.controller.createLink({ ends: [{ sandbox: 'a', ifName: 'bad name' }, { sandbox: 'b', ifName: 'eth1' }] }), /ends\[0\]\.interface/);
  await t.rejects(w.controller.createLink({ ends: [{ sandbox: 'a', ifName: 'eth1', addresses: ['10.0.0.1'] }, { sandbox: 'b', ifName: 'eth1' }] }), /ends\[0\]\.addresses\[0\]/);
  await t.rejects(w.controller.createLink({ mtu: 20, ends: [{ sandbox: 'a', ifName: 'eth1' }, { sandbox: 'b', ifName: 'eth1' }] }), /mtu: MTU/);
  await t.rejects(w.controller.createLink({ ends: [{ sandbox: 'a', ifName: 'eth1' }, { switch: 'none0' }] }), { code: 'NOT_FOUND' });
  await t.rejects(w.controller.createLink({ ends: [{ sandbox: 'a', ifName: 'eth1' }, { sandbox: 'a', ifName: 'eth1' }] }), /both ends/);
  await t.rejects(w.controller.createLink({ ends: [{ sandbox: 'a', ifName: 'eth1' }, { sandbox: 'b', ifName: 'eth1', impair: { rate: 1 } }] }), { code: 'UNAVAILABLE' }, 'no tc: impairments are refused');
  t.same(await w.controller.listLinks(), [], 'no record left by any failure');
  t.equal(await w.kernel.netlinkFor(a.ns).getLink(ifn('eth1')), undefined, 'nor an interface');
  const c = await w.controller.createSandbox({ name: 'c', mode: { kind: 'container', target: 'a' } });
  await t.rejects(w.controller.createLink({ ends: [{ sandbox: c.record.id, ifName: 'eth1' }, { sandbox: 'b', ifName: 'eth1' }] }), /namespace of its own/);
});

t.test('a failure in the middle rolls back; a crash leaves a record that reconcile cleans', async (t) => {
  const w = makeWorld();
  const [a, b] = await twoSandboxes(w);
  w.kernel.failNext('addAddr', new TsnetError('INVALID_CONFIG', 'refused'), { ns: b.ns });
  await t.rejects(w.controller.createLink({ ends: [{ sandbox: 'a', ifName: 'eth1', addresses: ['10.0.0.1/30'] }, { sandbox: 'b', ifName: 'eth1', addresses: ['10.0.0.2/30'] }] }), /refused/);
  t.equal(await w.kernel.netlinkFor(a.ns).getLink(ifn('eth1')), undefined, 'the pair is removed');
  t.same(await w.controller.listLinks(), []);
  // A crash after the record and the pair: what reconcile finds.
  const rec = await w.controller.createLink({ id: 'half', ends: [{ sandbox: 'a', ifName: 'eth2' }, { sandbox: 'b', ifName: 'eth2' }] });
  await w.state.links.put({ ...rec, status: 'creating' });
  await w.state.switches.put({ schemaVersion: 1, id: 'sw-6869', name: ifn('hi'), created: '', status: 'creating', labels: {} });
  const r = await w.controller.reconcile();
  t.ok(r.cleaned.includes('link half') && r.cleaned.includes('switch hi'), `reconcile cleaned ${r.cleaned.join(', ')}`);
  t.equal(await w.kernel.netlinkFor(a.ns).getLink(ifn('eth2')), undefined);
  t.same(await w.controller.listLinks(), []);
  // A link whose sandbox record is gone (removed behind tsnet's back) is an orphan.
  await w.controller.createLink({ id: 'orphan', ends: [{ sandbox: 'a', ifName: 'eth3' }, { sandbox: 'b', ifName: 'eth3' }] });
  await w.state.sandboxes.delete(b.id);
  t.ok((await w.controller.reconcile()).cleaned.includes('link orphan'));
  t.equal(await w.kernel.netlinkFor(a.ns).getLink(ifn('eth3')), undefined, 'removed through the end that is left');
});
