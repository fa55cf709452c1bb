import t from 'tap';
import { TsnetError } from '../core/errors.js';
import { HOST_NETNS, type IfName } from '../core/net.js';
import { makeWorld } from '../test/helpers/cnm-world.js';
import type { CnmChange, CreateSandboxRequest } from './controller.js';

const names = (links: readonly { name: string }[]): string[] => links.map((l) => l.name).sort();

t.test('predefined networks and a user network', async (t) => {
  const w = makeWorld({ hostRoutes: ['10.89.0.0/24'] });
  await w.controller.ensurePredefined();
  await w.controller.ensurePredefined(); // idempotent
  const nets = await w.controller.listNetworks();
  t.same(nets.map((n) => n.name), ['bridge', 'host', 'none']);
  const bridge = nets.find((n) => n.name === 'bridge');
  t.equal(bridge?.subnets[0]?.subnet, '10.89.1.0/24', 'default pool skips the host route 10.89.0.0/24');
  const host = w.kernel.netlinkFor(HOST_NETNS);
  t.ok(await host.getLink('tsnet0' as IfName), 'default bridge tsnet0 exists');
  t.same((await host.listAddrs('tsnet0' as IfName)).filter((a) => a.family === 4).map((a) => a.prefix), ['10.89.1.1/24']);
  const web = await w.controller.createNetwork({ name: 'web' });
  t.equal(web.subnets[0]?.subnet, '10.89.2.0/24');
  t.equal(web.config['bridge'], `br-${web.id.slice(0, 12)}`);
  t.equal(web.status, 'ready');
  t.ok(w.firewall.networks().has(web.id), 'firewall policy stated');
  t.equal(w.firewall.networks().get(web.id)?.masquerade, true);
  await t.rejects(w.controller.createNetwork({ name: 'web' }), { code: 'ALREADY_EXISTS', message: /network with name web already exists/ });
  await t.rejects(w.controller.createNetwork({ name: 'host' }), { code: 'ALREADY_EXISTS' });
  await t.rejects(w.controller.createNetwork({ name: 'h2', driver: 'host' }), { code: 'INVALID_CONFIG', message: /only one instance of "host"/ });
  await t.rejects(w.controller.createNetwork({ name: 'x', driver: 'ipvlan' }), { code: 'INVALID_CONFIG', message: /unknown driver/ });
  await t.rejects(w.controller.createNetwork({ name: 'x', driver: 'macvlan' }), { code: 'INVALID_CONFIG', message: /option parent: required/ });
  await t.rejects(w.controller.createNetwork({ name: 'bad name!' }), { code: 'INVALID_CONFIG', message: /name/ });
  await t.rejects(w.controller.createNetwork({ name: 'x', options: { 'com.docker.network.driver.mtu': 'abc' } }), { code: 'INVALID_CONFIG', message: /com\.docker\.network\.driver\.mtu/ });
  t.equal((await w.controller.listNetworks()).length, 4, 'failed creates left nothing');
});

t.test('bad subnets: overlap, gateway outside, nothing created', async (t) => {
  const w = makeWorld();
  await w.controller.createNetwork({ name: 'a', subnets: [{ subnet: '172.30.0.0/16' }] });
  const before = names(await w.kernel.netlinkFor(HOST_NETNS).listLinks());
  await t.rejects(w.controller.createNetwork({ name: 'b', subnets: [{ subnet: '172.30.5.0/24' }] }), { message: /overlaps network "a" \(172\.30\.0\.0\/16\)/ });
  await t.rejects(w.controller.createNetwork({ name: 'c', subnets: [{ subnet: '172.31.0.0/24', gateway: '172.32.0.1' }] }), { code: 'INVALID_CONFIG', message: /gateway/ });
  await t.rejects(w.controller.createNetwork({ name: 'd', subnets: [{ subnet: '172.31.0.0/33' }] }), { code: 'INVALID_CONFIG', message: /subnet/ });
  t.same(names(await w.kernel.netlinkFor(HOST_NETNS).listLinks()), before, 'no bridge left behind');
  t.same((await w.controller.listNetworks()).map((n) => n.name), ['a']);
  t.equal((await w.ipam.listPools()).length, 1, 'no pool left behind');
  t.equal(w.firewall.networks().size, 1);
});

t.test('sandbox lifecycle: join, second network, disconnect, remove', async (t) => {
  const w = makeWorld();
  await w.controller.ensurePredefined();
  await w.controller.createNetwork({ name: 'back', internal: true });
  const sb = await w.controller.createSandbox({ name: 'web1', hostname: 'web1', mode: { kind: 'network', network: 'bridge' } });
  t.equal(sb.netns.kind, 'path');
  const ctr = () => w.kernel.netlinkFor(sb.netns); // handles are released when an endpoint leaves
  t.same(names(await ctr().listLinks()), ['eth0', 'lo']);
  const eps = await w.controller.endpointsOf(sb.record.id);
  t.equal(eps.length, 1);
  const ep = eps[0]!;
  t.equal(ep.status, 'ready');
  t.equal(ep.addresses[0], '10.89.0.2/24', 'first address after the gateway');
  t.same((await ctr().listAddrs('eth0' as IfName)).filter((a) => a.family === 4).map((a) => a.prefix), ['10.89.0.2/24']);
  const routes = await ctr().listRoutes({ family: 4 });
  t.ok(routes.some((r) => r.dst === '0.0.0.0/0' && r.via === '10.89.0.1'), 'default route via the gateway');
  const hostLink = await w.kernel.netlinkFor(HOST_NETNS).getLink(ep.hostIf!);
  t.equal(hostLink?.master, 'tsnet0', 'host end on the bridge');
  t.match(w.files.get(sb.record.hostsPath) ?? '', /^10\.89\.0\.2\tweb1$/m, 'hosts file has own address');
  t.match(w.files.get(sb.record.resolvConfPath) ?? '', /^nameserver 10\.89\.0\.1$/m, 'the embedded resolver on the gateway (issue 5)');
  t.match(w.files.get(sb.record.resolvConfPath) ?? '', /embedded resolver: \[192\.0\.2\.53\]/);

  const ep2 = await w.controller.connect('web1', 'back');
  t.equal(ep2.ifName, 'eth1');
  t.equal(ep2.defaultRoute, false, 'only one default route');
  t.same(names(await ctr().listLinks()), ['eth0', 'eth1', 'lo']);
  await t.rejects(w.controller.connect('web1', 'back'), { code: 'ALREADY_EXISTS', message: /already exists in network back/ });
  await w.controller.disconnect('web1', 'back');
  t.same(names(await ctr().listLinks()), ['eth0', 'lo'], 'eth1 removed');
  t.same(await w.ipam.listAddresses(ep2.networkId), [], 'address released');
  await t.rejects(w.controller.disconnect('web1', 'back'), { code: 'NOT_FOUND' });
  await t.rejects(w.controller.deleteNetwork('bridge'), { code: 'ALREADY_EXISTS', message: /pre-defined/ });
  const net = await w.controller.createNetwork({ name: 'tmp' });
  await w.controller.connect('web1', 'tmp');
  await t.rejects(w.controller.deleteNetwork('tmp'), { code: 'ALREADY_EXISTS', message: /has active endpoints/ });

  await w.controller.deleteSandbox('web1');
  t.equal(w.namespaces.size, 0, 'namespace removed');
  t.same((await w.controller.listSandboxes()), []);
  t.same(await w.state.endpoints.list(), []);
  t.same(names(await w.kernel.netlinkFor(HOST_NETNS).listLinks()).filter((n) => n.startsWith('veth')), [], 'no veth left');
  t.same([...w.files.keys()], [], 'files removed');
  await w.controller.deleteNetwork('tmp');
  t.notOk(await w.kernel.netlinkFor(HOST_NETNS).getLink(`br-${net.id.slice(0, 12)}` as IfName), 'bridge removed');
  t.notOk(w.firewall.networks().has(net.id), 'firewall policy removed');
  t.same(await w.ipam.getPools(net.id), [], 'pool released');
});

t.test('static addresses, internal networks, IPv6', async (t) => {
  const w = makeWorld();
  await w.controller.createNetwork({ name: 'n', subnets: [{ subnet: '192.168.77.0/24', ipRange: '192.168.77.128/25' }], ipv6: true });
  const a = await w.controller.createSandbox({ name: 'a', mode: { kind: 'network', network: 'n' } });
  const [epA] = await w.controller.endpointsOf(a.record.id);
  t.equal(epA?.addresses[0], '192.168.77.128/24', 'dynamic addresses come from the ip-range');
  t.match(epA?.addresses[1] ?? '', /^fd[0-9a-f:]+\/64$/, 'ULA IPv6 address');
  const b = await w.controller.createSandbox({ name: 'b', mode: { kind: 'none' } });
  const epB = await w.controller.connect('b', 'n', { ip: '192.168.77.10' });
  t.equal(epB.addresses[0], '192.168.77.10/24');
  await w.controller.createSandbox({ name: 'c', mode: { kind: 'none' } });
  await t.rejects(w.controller.connect('c', 'n', { ip: '192.168.77.10' }), { code: 'ALREADY_EXISTS' });
  await t.rejects(w.controller.connect('c', 'n', { ip: '10.0.0.1' }), { code: 'INVALID_CONFIG', message: /ip/ });
  await t.rejects(w.controller.connect('c', 'n', { ip: 'fd00::1' }), { code: 'INVALID_CONFIG', message: /ip6/ });
  t.same((await w.state.endpoints.list()).filter((e) => e.sandboxId === (b.record.id)).length, 1);
  t.equal((await w.controller.endpointsOf((await w.controller.findSandbox('c')).id)).length, 0, 'failed connects left no endpoint');
  t.equal((await w.ipam.listAddresses((await w.controller.findNetwork('n')).id)).length, 4, 'only a and b hold addresses');

  await w.controller.createNetwork({ name: 'noicc', options: { 'com.docker.network.bridge.enable_icc': 'false' } });
  const e = await w.controller.createSandbox({ name: 'e', mode: { kind: 'network', network: 'noicc' } });
  const [epE] = await w.controller.endpointsOf(e.record.id);
  t.ok(w.kernel.isolatedPort(HOST_NETNS, epE?.hostIf ?? ''), 'enable_icc=false: the bridge port is isolated');
  t.notOk(w.kernel.isolatedPort(HOST_NETNS, epB.hostIf ?? ''), 'icc on: not isolated');
  t.equal(w.firewall.networks().get((await w.controller.findNetwork('noicc')).id)?.icc, false, 'and the firewall knows');

  await w.controller.createNetwork({ name: 'int', internal: true });
  const d = await w.controller.createSandbox({ name: 'd', mode: { kind: 'network', network: 'int' } });
  const routes = await w.kernel.netlinkFor(d.netns).listRoutes({ family: 4 });
  t.notOk(routes.some((r) => r.dst === '0.0.0.0/0'), 'internal network: no default route');
  t.equal(w.firewall.networks().get((await w.controller.findNetwork('int')).id)?.internal, true);
});

t.test('host, none and container modes', async (t) => {
  const w = makeWorld();
  await w.controller.ensurePredefined();
  const h = await w.controller.createSandbox({ name: 'h', mode: { kind: 'host' } });
  t.same(h.netns, HOST_NETNS);
  await t.rejects(w.controller.connect('h', 'bridge'), { code: 'INVALID_CONFIG', message: /host network/ });
  const n = await w.controller.createSandbox({ name: 'n', mode: { kind: 'none' } });
  t.same(names(await w.kernel.netlinkFor(n.netns).listLinks()), ['lo']);
  const srv = await w.controller.createSandbox({ name: 'srv', mode: { kind: 'network', network: 'bridge' } });
  const side = await w.controller.createSandbox({ name: 'side', mode: { kind: 'container', target: 'srv' } });
  t.same(side.netns, srv.netns, 'shares the namespace');
  t.equal(side.record.hostsPath, srv.record.hostsPath, 'shares the hosts file');
  await t.rejects(w.controller.createSandbox({ name: 's2', mode: { kind: 'container', target: 'nope' } }), { code: 'NOT_FOUND', message: /no such container: nope/ });
  await t.rejects(w.controller.createSandbox({ name: 's3', hostname: 'x', mode: { kind: 'container', target: 'srv' } }), { code: 'INVALID_CONFIG', message: /hostname/ });
  await t.rejects(w.controller.connect('side', 'bridge'), { code: 'INVALID_CONFIG', message: /container type network/ });
  await t.rejects(w.controller.createSandbox({ name: 'srv', mode: { kind: 'none' } }), { code: 'ALREADY_EXISTS', message: /already in use/ });
  await w.controller.deleteSandbox('side');
  t.ok(w.kernel.hasNetns(srv.netns), 'removing the sharer keeps the owner namespace');
});

t.test('failures roll back; reconcile cleans half-made state and restores the kernel', async (t) => {
  const w = makeWorld();
  await w.controller.ensurePredefined();
  await w.controller.createSandbox({ name: 'a', mode: { kind: 'none' } });
  w.kernel.failNext('addVeth', new TsnetError('INTERNAL', 'injected'));
  await t.rejects(w.controller.connect('a', 'bridge'), { message: /injected/ });
  t.same(await w.state.endpoints.list(), [], 'no endpoint record');
  const bridgeNet = await w.controller.findNetwork('bridge');
  t.same(await w.ipam.listAddresses(bridgeNet.id), [], 'no address held');
  t.same(names(await w.kernel.netlinkFor(HOST_NETNS).listLinks()).filter((x) => x.startsWith('veth')), []);

  w.firewall.failNext('INTERNAL', 'ensureNetwork');
  await t.rejects(w.controller.createNetwork({ name: 'z' }), { code: 'INTERNAL' });
  t.same((await w.controller.listNetworks()).map((n) => n.name), ['bridge', 'host', 'none']);
  t.equal((await w.kernel.netlinkFor(HOST_NETNS).listLinks()).filter((l) => l.name.startsWith('br-')).length, 0, 'bridge of the failed network removed');

  // A crash after the endpoint record and the address, before the join:
  const a = await w.controller.findSandbox('a');
  await w.state.endpoints.create({
    schemaVersion: 1, id: 'deadbeef' as never, networkId: bridgeNet.id, sandboxId: a.id, created: '', status: 'creating',
    ifName: 'eth0' as IfName, hostIf: 'vethdead' as IfName, addresses: ['10.89.0.9/24' as never], aliases: [], defaultRoute: true, ports: [],
  });
  await w.ipam.requestAddress({ networkId: bridgeNet.id, owner: 'deadbeef', ip: '10.89.0.9' });
  await w.ipam.requestAddress({ networkId: bridgeNet.id, owner: 'orphan-owner' });
  // and an admin deleted the default bridge:
  await w.kernel.netlinkFor(HOST_NETNS).removeLink('tsnet0' as IfName);
  const r = await w.controller.reconcile();
  t.ok(r.cleaned.some((c) => c.startsWith('endpoint deadbeef')), 'half-made endpoint cleaned');
  t.ok(r.cleaned.some((c) => c.startsWith('address')), 'orphan address released');
  t.same(await w.ipam.listAddresses(bridgeNet.id), []);
  t.same(await w.state.endpoints.list(), []);
  t.ok(await w.kernel.netlinkFor(HOST_NETNS).getLink('tsnet0' as IfName), 'bridge restored');
  t.ok(r.restored.includes('bridge'));
  const again = await w.controller.connect('a', 'bridge');
  t.equal(again.status, 'ready', 'works after reconcile');
});

t.test('published ports: ephemeral picks, taken and busy host ports refused before anything changes', async (t) => {
  const w = makeWorld();
  await w.controller.ensurePredefined();
  w.host.ephemeral = { start: 41000, end: 41001 } as typeof w.host.ephemeral;
  w.host.listeners.push({ proto: 'tcp', ip: '0.0.0.0', port: 41000, } as (typeof w.host.listeners)[number]);
  const net = { kind: 'network', network: 'bridge' } as const;
  const a = await w.controller.createSandbox({ name: 'a', mode: net, connect: { ports: [{ proto: 'tcp', containerPort: { start: 80, end: 80 } } as never, { proto: 'tcp', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } } as never] } });
  const [epA] = await w.controller.endpointsOf(a.record.id);
  t.same(epA?.ports.map((m) => [m.hostPort.start, m.containerPort.start]), [[41001, 80], [8080, 80]], 'ephemeral skips the listener at 41000; the explicit one as asked');
  t.equal(w.firewall.ports().get(epA!.id)?.length, 2, 'both in the firewall');
  const before = { links: (await w.kernel.netlinkFor(HOST_NETNS).listLinks()).length, sandboxes: (await w.controller.listSandboxes()).length, calls: w.firewall.calls.length };
  const refused = async (ports: unknown[], re: RegExp, code: string): Promise<void> => {
    await t.rejects(w.controller.createSandbox({ name: 'b', mode: net, connect: { ports: ports as never } }), { code, message: re });
    t.equal((await w.kernel.netlinkFor(HOST_NETNS).listLinks()).length, before.links, 'no veth left');
    t.equal((await w.controller.listSandboxes()).length, before.sandboxes, 'no sandbox left');
  };
  await refused([{ proto: 'tcp', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } }], /0\.0\.0\.0:8080\/tcp is already published by container a/, 'ALREADY_EXISTS');
  await refused([{ proto: 'tcp', hostPort: { start: 41000, end: 41000 }, containerPort: { start: 80, end: 80 } }], /in use by a process on the host/, 'ALREADY_EXISTS');
  await refused([{ proto: 'tcp', hostIp: '198.51.100.7', hostPort: { start: 9000, end: 9000 }, containerPort: { start: 80, end: 80 } }], /198\.51\.100\.7 is not an address of this host/, 'INVALID_CONFIG');
  await refused([{ proto: 'tcp', containerPort: { start: 80, end: 80 } }], /no free tcp port in the ephemeral range 41000-41001/, 'EXHAUSTED');
  w.host.ephemeral = { start: 41000, end: 41005 } as typeof w.host.ephemeral;
  await refused([{ proto: 'tcp', containerPort: { start: 80, end: 84 } }], /no free tcp port block of 5 in the ephemeral range/, 'EXHAUSTED');
  t.same(w.firewall.calls.slice(before.calls).filter((c) => c.op === 'ensurePorts'), [], 'the firewall was never asked to publish');
  const gw = (await w.controller.findNetwork('bridge')).subnets[0]!.gateway;
  const b = await w.controller.createSandbox({ name: 'b', mode: net, connect: { ports: [{ proto: 'tcp', containerPort: { start: 80, end: 81 } } as never, { proto: 'udp', hostIp: gw, containerPort: { start: 53, end: 53 } } as never] } });
  const [epB] = await w.controller.endpointsOf(b.record.id);
  const [tcp, udp] = epB?.ports ?? [];
  t.ok(tcp && tcp.hostPort.start >= 41002 && tcp.hostPort.end === tcp.hostPort.start + 1 && tcp.hostPort.end <= 41005, `a free block of two: ${JSON.stringify(tcp?.hostPort)}`);
  t.ok(udp && udp.proto === 'udp' && udp.hostIp === gw && udp.hostPort.start >= 41000 && udp.hostPort.start <= 41005, 'UDP on a local host address');
  await w.controller.deleteSandbox('a');
  const c = await w.controller.createSandbox({ name: 'c', mode: net, connect: { ports: [{ proto: 'tcp', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } } as never] } });
  t.equal((await w.controller.endpointsOf(c.record.id))[0]?.ports[0]?.hostPort.start, 8080, 'a removed container frees its host port');

  // An admin flushes the ruleset: reconcile restores the networks' policy and the published ports.
  const want = [...w.firewall.ports().entries()].sort();
  await w.firewall.removeAll();
  t.equal(w.firewall.ports().size, 0);
  const r = await w.controller.reconcile();
  t.ok(r.restored.includes('bridge'), 'the network policy is restored');
  t.equal(r.restored.filter((x) => x.startsWith('ports of ')).length, 2, 'and the ports of both endpoints');
  t.same([...w.firewall.ports().entries()].sort(), want, 'exactly the mappings there were');
  t.same((await w.controller.reconcile()).restored, [], 'nothing to restore the second time');
  const reload = await w.controller.reloadFirewall();
  t.same(reload.networks, ['bridge'], 'reload re-applies every network with a data path');
  t.equal(reload.endpoints.length, 2, '... and every endpoint with ports');
  t.same([...w.firewall.ports().entries()].sort(), want, 'and changes nothing that was right');
});

t.test('embedded DNS: resolv.conf per network and --dns, change events for the daemon', async (t) => {
  const events: CnmChange[] = [];
  const w = makeWorld({ onChange: async (e) => { events.push(e); } });
  await w.controller.ensurePredefined();
  // A daemon that is already running (the first `run` started it) learns the default bridge from this event.
  t.same(events.map((e) => [e.kind, e.networkIds.length, e.dns]), [['network-created', 3, true]], 'the predefined networks: one event, the bridge with DNS');
  await w.controller.ensurePredefined();
  t.equal(events.length, 1, 'none when they exist already');
  const lab = await w.controller.createNetwork({ name: 'lab', subnets: [{ subnet: '10.50.0.0/24' }] });
  const quiet = await w.controller.createNetwork({ name: 'quiet', subnets: [{ subnet: '10.51.0.0/24' }], dnsEnabled: false });
  t.equal(quiet.dnsEnabled, false);
  t.equal(lab.dnsEnabled, undefined, 'absent: on');
  const resolv = async (name: string, req: Partial<CreateSandboxRequest>): Promise<string> => {
    const sb = await w.controller.createSandbox({ name, mode: { kind: 'network', network: 'lab' }, ...req });
    return w.files.get(sb.record.resolvConfPath) ?? '';
  };
  const plain = await resolv('a', { dnsSearch: ['corp.test'], dnsOptions: ['timeout:1'] });
  t.match(plain, /^nameserver 10\.50\.0\.1$/m);
  t.equal((plain.match(/^nameserver/gm) ?? []).length, 1);
  t.match(plain, /^search corp\.test$/m);
  t.match(plain, /^options timeout:1 ndots:0$/m);
  const explicit = await resolv('b', { dns: ['198.51.100.9'] });
  t.match(explicit, /^nameserver 198\.51\.100\.9$/m, '--dns: exactly those servers');
  t.notMatch(explicit, /10\.50\.0\.1/);
  const off = await resolv('c', { mode: { kind: 'network', network: 'quiet' } });
  t.match(off, /^nameserver 192\.0\.2\.53$/m, 'a network without DNS: the host\'s servers');
  const none = await resolv('d', { mode: { kind: 'none' } });
  t.notMatch(none, /10\.50\.0\.1/);
  await w.controller.disconnect('a', 'lab');
  await w.controller.deleteSandbox('b');
  await w.controller.deleteSandbox('d');
  await w.controller.deleteNetwork('quiet').catch(() => undefined); // c is still on it
  await w.controller.deleteSandbox('c');
  await w.controller.deleteNetwork('quiet');
  const seen = events.map((e) => `${e.kind}:${e.networkIds.map((id) => (id === lab.id ? 'lab' : id === quiet.id ? 'quiet' : 'other')).join(',')}:${String(e.dns)}`);
  t.same(seen.filter((x) => !x.startsWith('network-created:other')), [
    'network-created:lab:true', 'network-created:quiet:false',
    'connected:lab:true', 'connected:lab:true', 'connected:quiet:false',
    'disconnected:lab:true', 'sandbox-deleted:lab:true', 'sandbox-deleted:quiet:false', 'network-deleted:quiet:false',
  ], 'one event per successful mutation, none for failed ones or sandboxes without endpoints');
  const failing = makeWorld({ onChange: async () => { throw new Error('daemon down'); } });
  await failing.controller.ensurePredefined();
  t.ok(await failing.controller.createSandbox({ name: 'x', mode: { kind: 'network', network: 'bridge' } }), 'a failing notification does not fail the mutation');
});

t.test('sandbox names: unique by claim without a global lock; a crashed creation\'s claim is taken over', async (t) => {
  const w = makeWorld();
  await w.controller.ensurePredefined();
  const none = { kind: 'none' } as const;
  const results = await Promise.allSettled(Array.from({ length: 8 }, () => w.controller.createSandbox({ name: 'same', mode: none })));
  t.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'one of eight concurrent creations of one name wins');
  t.ok(results.filter((r) => r.status === 'rejected').every((r) => /the container name "same" is already in use|being created/.test(String((r as PromiseRejectedResult).reason))), 'the others are told why');
  const winner = results.find((r) => r.status === 'fulfilled') as PromiseFulfilledResult<Awaited<ReturnType<typeof w.controller.createSandbox>>> | undefined;
  t.equal(await w.state.sandboxNames.owner('same'), winner?.value.record.id, 'the name is held by the one that won');
  t.equal((await w.state.sandboxes.list()).filter((s) => s.name === 'same').length, 1, 'one record of that name');
  // A removal cut short after the record went and before the name: the name is a leftover.
  await w.state.sandboxNames.reserve('orphan', 'f'.repeat(64));
  const sb = await w.controller.createSandbox({ name: 'orphan', mode: none });
  t.equal(await w.state.sandboxNames.owner('orphan'), sb.record.id, 'the leftover name was taken over');
  await w.controller.deleteSandbox('orphan');
  t.equal(await w.state.sandboxNames.owner('orphan'), undefined, 'deleting the sandbox releases its name');
  const again = await w.controller.createSandbox({ name: 'orphan', mode: none });
  t.ok(again.record.id, 'the name is free again');
});

t.test('sandboxes recorded before names were claimed keep their names', async (t) => {
  const older = makeWorld();
  await older.controller.ensurePredefined();
  const old = await older.controller.createSandbox({ name: 'old', mode: { kind: 'none' } });
  // As a store written by an older tsnet: the record, no name index at all.
  const w = makeWorld();
  await w.controller.ensurePredefined();
  const oldId = 'e'.repeat(64) as typeof old.record.id; // the worlds' ids come from one seed
  await w.state.sandboxes.create({ ...old.record, id: oldId });
  t.notOk(await w.state.sandboxNames.complete(), 'not indexed yet');
  await t.rejects(w.controller.createSandbox({ name: 'old', mode: { kind: 'none' } }), { code: 'ALREADY_EXISTS', message: /"old" is already in use/ });
  t.equal(await w.state.sandboxNames.owner('old'), oldId, 'indexed for the existing sandbox');
  t.ok(await w.state.sandboxNames.complete(), 'indexed once');
});

t.test('two removals of one sandbox at once: one removes its endpoints and reports them, the other nothing', async (t) => {
  const changes: CnmChange[] = [];
  const w = makeWorld({ onChange: async (e) => void changes.push(e) });
  await w.controller.ensurePredefined();
  const sb = await w.controller.createSandbox({ name: 'twice', mode: { kind: 'network', network: 'bridge' } });
  const [a, b] = await Promise.all([w.controller.deleteSandbox(sb.record.id), w.controller.deleteSandbox(sb.record.id)]);
  t.same([a.length, b.length].sort(), [0, 1], 'one endpoint removed, by one of them');
  t.equal(changes.filter((c) => c.kind === 'sandbox-deleted').length, 1, 'one sandbox-deleted change');
  t.same(await w.controller.listSandboxes(), []);
});
