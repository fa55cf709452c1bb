import t from 'tap';
import { stat } from 'node:fs/promises';
import { TsnetError } from '../../core/errors.js';
import { parseNetnsPath } from '../../core/net.js';
import { checkNetns, netnsOfPid, parseNetnsName } from '../../sys/netns.js';
import { skipUnlessRoot, withIsolatedHost } from '../helpers/isolated-host.js';
import { request, startServer } from '../helpers/traffic.js';

t.test('netns: create, open, list, remove (idempotent)', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const m = host.netns;
    t.same(await m.list(), []);
    const a = await m.create('ctr-a');
    t.equal(a.kind, 'path');
    await t.rejects(m.create('ctr-a'), { code: 'ALREADY_EXISTS' }, 'duplicate name is ALREADY_EXISTS');
    t.same(await m.open('ctr-a'), a);
    await t.rejects(m.open('nope'), { code: 'NOT_FOUND' });
    await m.create('ctr-b');
    t.same(await m.list(), ['ctr-a', 'ctr-b']);
    // the namespace is a real, separate network namespace
    const links = JSON.parse((await host.execIn(a, ['ip', '-json', 'link', 'show'])).stdout) as { ifname: string }[];
    t.same(links.map((l) => l.ifname), ['lo'], 'fresh namespace has only lo');
    const inoA = (await stat(m.pathOf('ctr-a'))).ino;
    const inoB = (await stat(m.pathOf('ctr-b'))).ino;
    t.not(inoA, inoB, 'distinct namespaces');
    await m.remove('ctr-a');
    await m.remove('ctr-a');
    t.same(await m.list(), ['ctr-b'], 'remove is idempotent');
    await t.rejects(m.open('ctr-a'), { code: 'NOT_FOUND' });
    await t.rejects(m.create('../etc'), { code: 'INVALID_CONFIG' });
  });
});

t.test('netns: references by path and by pid', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    t.same(await checkNetns(host.ns), host.ns);
    await t.rejects(checkNetns(parseNetnsPath('/run/does/not/exist'), 'CNI_NETNS'), new TsnetError('NOT_FOUND', 'CNI_NETNS: /run/does/not/exist does not exist'));
    await t.rejects(checkNetns(parseNetnsPath('/etc/hostname'), 'CNI_NETNS'), { code: 'NOT_FOUND', message: /not a network namespace/ });
    const self = await netnsOfPid(process.pid);
    t.equal(self.kind, 'path');
    await t.rejects(netnsOfPid(0), { code: 'INVALID_CONFIG' });
    t.throws(() => parseNetnsName('a b'), { code: 'INVALID_CONFIG' });
  });
});

t.test('harness: a veth between host and a namespace carries TCP', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const ctr = await host.newNetns('ctr');
    await host.exec(['ip', 'link', 'add', 'vh0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ctr.kind === 'path' ? ctr.path : '']);
    await host.exec(['ip', 'addr', 'add', '10.99.0.1/24', 'dev', 'vh0']);
    await host.exec(['ip', 'link', 'set', 'vh0', 'up']);
    await host.execIn(ctr, ['ip', 'addr', 'add', '10.99.0.2/24', 'dev', 'eth0']);
    await host.execIn(ctr, ['ip', 'link', 'set', 'eth0', 'up']);
    await startServer(host, ctr, 'tcp', '10.99.0.2', 8080);
    const reply = await request(host.ns, 'tcp', '10.99.0.2', 8080, 'x');
    t.equal(reply, 'hello x from 10.99.0.2 to 10.99.0.1');
  });
});

t.test('netns: sysctls set at creation; a failing one leaves nothing', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const ns = await host.netns.create('v4only', { sysctls: { 'net.ipv6.conf.default.disable_ipv6': 1 } });
    const v = (await host.execIn(ns, ['sysctl', '-n', 'net.ipv6.conf.default.disable_ipv6'])).stdout.trim();
    t.equal(v, '1', 'set inside the new namespace');
    const hostV = (await host.exec(['sysctl', '-n', 'net.ipv6.conf.default.disable_ipv6'])).stdout.trim();
    t.equal(hostV, '0', 'not in the host');
    await t.rejects(host.netns.create('broken', { sysctls: { 'net.ipv4.no_such_key': 1 } }), { code: 'INTERNAL' });
    t.same(await host.netns.list(), ['v4only'], 'the failed namespace is gone');
    await t.rejects(host.netns.create('bad', { sysctls: { 'kernel.hostname': 'x' } }), { code: 'INVALID_CONFIG' });
    t.same(await host.netns.list(), ['v4only']);
  });
});
