/** The library controller's events and DNS records, over the fake world (no root). */
import t from 'tap';
import { nullLogger, type Logger } from '../core/log.js';
import { makeWorld } from '../test/helpers/cnm-world.js';
import { withEvents, type TsnetEventName, type TsnetEvents } from './events.js';

type Seen = { name: TsnetEventName; what: string }[];
const NAMES: TsnetEventName[] = ['network.created', 'network.removed', 'endpoint.created', 'endpoint.joined', 'endpoint.removed', 'sandbox.created', 'sandbox.removed'];

function setup(log: Logger = nullLogger) {
  const w = makeWorld();
  const c = withEvents(w.controller, log);
  const seen: Seen = [];
  const describe = (e: TsnetEvents[TsnetEventName]): string => {
    if ('endpoint' in e) return `${e.endpoint.ifName}@${e.endpoint.addresses.join(',')}${'sandbox' in e ? ` in ${e.sandbox.name}` : ''}`;
    if ('network' in e) return e.network.name;
    return e.sandbox.name;
  };
  for (const n of NAMES) c.on(n, (e) => seen.push({ name: n, what: describe(e) }));
  return { w, c, seen };
}

t.test('events follow each successful operation, with the records', async (t) => {
  const { w, c, seen } = setup();
  await w.controller.ensurePredefined();
  await c.createNetwork({ name: 'front', subnets: [{ subnet: '10.1.0.0/24' }] });
  await c.createNetwork({ name: 'back', subnets: [{ subnet: '10.2.0.0/24' }] });
  await c.createSandbox({ name: 'web', mode: { kind: 'network', network: 'front' } });
  await c.connect('web', 'back', { ip: '10.2.0.9', aliases: ['api'] });
  await c.disconnect('web', 'front');
  await c.deleteSandbox('web');
  await c.deleteNetwork('front');
  t.same(await c.pruneNetworks(), ['back']);
  t.same(seen, [
    { name: 'network.created', what: 'front' },
    { name: 'network.created', what: 'back' },
    { name: 'sandbox.created', what: 'web' },
    { name: 'endpoint.created', what: 'eth0@10.1.0.2/24' },
    { name: 'endpoint.joined', what: 'eth0@10.1.0.2/24 in web' },
    { name: 'endpoint.created', what: 'eth1@10.2.0.9/24' },
    { name: 'endpoint.joined', what: 'eth1@10.2.0.9/24 in web' },
    { name: 'endpoint.removed', what: 'eth0@10.1.0.2/24 in web' },
    { name: 'endpoint.removed', what: 'eth1@10.2.0.9/24 in web' },
    { name: 'sandbox.removed', what: 'web' },
    { name: 'network.removed', what: 'front' },
    { name: 'network.removed', what: 'back' },
  ]);
});

t.test('a failed operation emits nothing; a throwing listener is logged and harmless; off works', async (t) => {
  const warnings: string[] = [];
  const log: Logger = { ...nullLogger, warn: (m) => void warnings.push(m), child: () => log };
  const { c, seen } = setup(log);
  await t.rejects(c.createNetwork({ name: 'bad name' }), { code: 'INVALID_CONFIG' });
  await t.rejects(c.createSandbox({ name: 'x', mode: { kind: 'network', network: 'missing' } }), { code: 'NOT_FOUND' });
  t.same(seen, [], 'no event for failed operations');
  const stop = c.on('network.created', () => {
    throw new Error('listener bug');
  });
  const n = await c.createNetwork({ name: 'ok' });
  t.equal(n.name, 'ok', 'the operation succeeded anyway');
  t.same(seen.map((s) => s.name), ['network.created'], 'the other listener still ran');
  t.same(warnings, ['event listener failed']);
  stop();
  await c.createNetwork({ name: 'ok2' });
  t.same(warnings.length, 1, 'unsubscribed');
});

t.test('dnsRecords: every name of every endpoint on the network', async (t) => {
  const { c } = setup();
  await c.createNetwork({ name: 'n', subnets: [{ subnet: '10.3.0.0/24' }] });
  await c.createSandbox({ name: 'db', hostname: 'db-host', mode: { kind: 'network', network: 'n' }, connect: { aliases: ['postgres'] } });
  await c.createSandbox({ name: 'app', hostname: 'app', mode: { kind: 'network', network: 'n' } });
  const recs = (await c.dnsRecords('n')).map((r) => `${r.name}=${r.addresses.join(',')}`).sort();
  t.same(recs, ['app=10.3.0.3', 'db-host=10.3.0.2', 'db=10.3.0.2', 'postgres=10.3.0.2'], 'name, hostname and aliases; a name once');
});

t.test('many concurrent operations on one controller keep the state consistent', async (t) => {
  const { w, c, seen } = setup();
  await Promise.all(Array.from({ length: 6 }, (_, i) => c.createNetwork({ name: `n${i}` })));
  const subnets = (await c.listNetworks()).map((n) => n.subnets[0]?.subnet);
  t.equal(new Set(subnets).size, 6, 'six distinct subnets');
  await Promise.all(Array.from({ length: 24 }, (_, i) => c.createSandbox({ name: `s${i}`, mode: { kind: 'network', network: `n${i % 6}` } })));
  await Promise.all([
    ...Array.from({ length: 12 }, (_, i) => c.connect(`s${i}`, `n${(i + 1) % 6}`)),
    ...Array.from({ length: 6 }, (_, i) => c.deleteSandbox(`s${12 + i}`)),
  ]);
  const eps = (await Promise.all((await c.listSandboxes()).map((s) => c.endpointsOf(s.id)))).flat();
  t.equal((await c.listSandboxes()).length, 18);
  t.equal(eps.length, 18 + 12, 'one endpoint per sandbox, plus the 12 connects');
  const addrs = eps.map((e) => e.addresses[0]);
  t.equal(new Set(addrs).size, addrs.length, 'no address handed out twice');
  for (const n of await c.listNetworks()) {
    const held = (await w.ipam.listAddresses(n.id)).map((a) => a.address).sort();
    t.same(held, eps.filter((e) => e.networkId === n.id).map((e) => e.addresses[0]).sort(), `${n.name}: IPAM reservations = endpoints`);
  }
  t.equal(seen.filter((s) => s.name === 'endpoint.joined').length, 24 + 12);
  t.equal(seen.filter((s) => s.name === 'endpoint.removed').length, 6);
});

t.test('published ports in plain numbers; a bad one names its field and nothing is made', async (t) => {
  const { w, c, seen } = setup();
  await c.createNetwork({ name: 'p', subnets: [{ subnet: '10.4.0.0/24' }] });
  await c.createSandbox({ name: 'a', mode: { kind: 'network', network: 'p' }, connect: { ports: [{ hostPort: 8080, containerPort: 80 }, { proto: 'udp', hostIp: '127.0.0.1', hostPort: { start: 5000, end: 5001 }, containerPort: { start: 5000, end: 5001 } }] } });
  const ep = (await c.endpointsOf('a'))[0];
  t.same(ep?.ports.map((p) => `${p.proto} ${p.hostIp ?? '*'}:${p.hostPort.start}-${p.hostPort.end}->${p.containerIp}:${p.containerPort.start}`), ['tcp *:8080-8080->10.4.0.2:80', 'udp 127.0.0.1:5000-5001->10.4.0.2:5000']);
  t.equal(w.firewall.ports().size, 1, 'the firewall has them');
  const before = seen.length;
  await t.rejects(c.createSandbox({ name: 'b', mode: { kind: 'network', network: 'p' }, connect: { ports: [{ hostPort: 0, containerPort: 80 }] } }), { code: 'INVALID_CONFIG', message: /ports\[0\]\.hostPort/ });
  await t.rejects(c.connect('a', 'p', { ports: [{ hostPort: { start: 9, end: 8 }, containerPort: 80 }] }), { message: /ports\[0\]\.hostPort: range 9-8 is reversed/ });
  t.equal(seen.length, before, 'no event');
  t.same((await c.listSandboxes()).map((s) => s.name), ['a'], 'no sandbox b');
});
