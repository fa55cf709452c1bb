/**
 * Contract tests of the Docker plugin: the dispatcher wired to the real NetworkDriver/IpamDriver
 * handlers, the real bridge driver and IPAM allocator, over the fake kernel, fake firewall and
 * memory store. Request bodies are those a real dockerd sent (test/golden/docker-plugin), plus
 * malformed ones.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { TsnetError } from '../../core/errors.js';
import { nullLogger } from '../../core/log.js';
import { HOST_NETNS, type EndpointId, type NetworkId } from '../../core/net.js';
import { makeWorld, seededHex } from '../../test/helpers/cnm-world.js';
import { createDispatcher, type DispatchResult } from './dispatch.js';
import { createDockerIpam } from './ipam-driver.js';
import { createDockerNetworkDriver } from './network-driver.js';

interface Recorded {
  readonly path: string;
  readonly body: string;
  readonly status: number;
  readonly response: Record<string, unknown>;
}
const SESSION = JSON.parse(readFileSync(new URL('../../test/golden/docker-plugin/dockerd-20.10-session.json', import.meta.url), 'utf8')) as { calls: Recorded[] };

function world() {
  const cnm = makeWorld();
  const { kernel, firewall, ipam, state } = cnm;
  const randomHex = seededHex();
  const network = createDockerNetworkDriver({ controller: cnm.controller, driver: 'bridge', log: nullLogger, randomHex });
  const dockerIpam = createDockerIpam({ ipam, log: nullLogger, randomHex });
  const dispatch = createDispatcher({ network, ipam: dockerIpam }, nullLogger);
  const call = (path: string, body: unknown = ''): Promise<DispatchResult> => dispatch(path, typeof body === 'string' ? body : JSON.stringify(body));
  const hostLinks = async (): Promise<string[]> => (await kernel.netlinkFor(HOST_NETNS).listLinks()).map((l) => l.name as string).filter((n) => n !== 'lo').sort();
  // Docker's networks and endpoints are the controller's door records.
  const records = async (name: 'docker-networks' | 'docker-endpoints'): Promise<string[]> =>
    name === 'docker-networks' ? (await state.networks.list()).filter((n) => n.door === 'docker').map((n) => n.id) : (await state.endpoints.list()).filter((e) => e.door === 'docker').map((e) => e.id);
  return { kernel, firewall, ipam, network, dispatch, call, hostLinks, records, controller: cnm.controller };
}

const NET = 'c6074ca84c1d54e21537475799799b37b3cc6ea5e8ed5af86115dcdb294b4410';
const EP1 = '40657e683980b344e842d5c7cff5cf6d1209371ed230e85501605926492286dc';
const EP2 = '46ef0957a01181e97701824258fccb13f4dafb068340473b1ee913590869725c';

/** A network with a pool, the way dockerd makes one: RequestPool, gateway, CreateNetwork. */
async function makeNetwork(w: ReturnType<typeof world>, subnet = '10.77.0.0/24', extra: Record<string, unknown> = {}): Promise<string> {
  const pool = await w.call('/IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: subnet, SubPool: '', Options: {}, V6: false });
  const poolId = pool.body['PoolID'] as string;
  const gw = await w.call('/IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
  const r = await w.call('/NetworkDriver.CreateNetwork', { NetworkID: NET, Options: { 'com.docker.network.generic': {}, ...extra }, IPv4Data: [{ AddressSpace: 'tsnet-local', Pool: subnet, Gateway: gw.body['Address'] }], IPv6Data: [] });
  if (r.status !== 200 || Object.keys(r.body).length > 0) throw new Error(`CreateNetwork: ${JSON.stringify(r)}`);
  return poolId;
}
async function makeEndpoint(w: ReturnType<typeof world>, poolId: string, id: string): Promise<string> {
  const a = await w.call('/IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: null });
  const r = await w.call('/NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: id, Interface: { Address: a.body['Address'], AddressIPv6: '', MacAddress: '' }, Options: {} });
  if (r.status !== 200 || r.body['Err'] !== undefined) throw new Error(`CreateEndpoint: ${JSON.stringify(r)}`);
  return a.body['Address'] as string;
}

t.test('replays a recorded dockerd session: same statuses and errors, nothing left behind', async (t) => {
  const w = world();
  const poolIds = new Map<string, string>(); // recorded PoolID → the one this run handed out
  let checkedPorts = false;
  for (const [i, c] of SESSION.calls.entries()) {
    let body = c.body;
    for (const [from, to] of poolIds) body = body.replaceAll(from, to);
    const r = await w.dispatch(c.path, body);
    t.equal(r.status, c.status, `#${i} ${c.path}: status`);
    const errKey = c.path.startsWith('/IpamDriver.') ? 'Error' : 'Err';
    t.equal(r.body[errKey], c.response[errKey], `#${i} ${c.path}: ${errKey}`);
    if (typeof c.response['PoolID'] === 'string') poolIds.set(c.response['PoolID'], r.body['PoolID'] as string);
    if (typeof c.response['Address'] === 'string') t.equal(r.body['Address'], c.response['Address'], `#${i} ${c.path}: same address as recorded`);
    if (c.path === '/NetworkDriver.Join') {
      t.same(Object.keys(r.body).sort(), Object.keys(c.response).sort(), `#${i} Join: same fields`);
      t.match(r.body, { InterfaceName: { DstPrefix: 'eth', SrcName: /^tsp[0-9a-f]{7}$/ } });
    }
    if (c.path === '/NetworkDriver.ProgramExternalConnectivity' && body.includes(EP1)) {
      // -p 8080:80 -p 127.0.0.1:8081:81 -p 9000-9001:90: one DNAT each; the range gives its first free port.
      const rules = w.firewall.ports().get(EP1 as EndpointId) ?? [];
      t.same(
        rules.map((x) => `${x.hostIp ?? "*"}:${x.hostPorts.start}->${x.to}:${x.toPorts.start}`).sort(),
        ['*:8080->10.77.0.128:80', '*:9000->10.77.0.128:90', '127.0.0.1:8081->10.77.0.128:81'],
        'ports published as DNAT rules',
      );
      checkedPorts = true;
    }
  }
  t.ok(checkedPorts, 'the port mappings were checked');
  t.same(await w.hostLinks(), [], 'no bridge or veth left');
  t.same([...w.firewall.networks().keys()], [], 'no firewall network left');
  t.same([...w.firewall.ports().keys()], [], 'no port mapping left');
  t.same(await w.records('docker-networks'), [], 'no network record left');
  t.same(await w.records('docker-endpoints'), [], 'no endpoint record left');
  t.same(await w.ipam.listPools(), [], 'no IPAM pool left');
});

const BODY_METHODS = [
  'NetworkDriver.GwAllocCheck', 'NetworkDriver.AllocateNetwork', 'NetworkDriver.FreeNetwork', 'NetworkDriver.CreateNetwork', 'NetworkDriver.DeleteNetwork',
  'NetworkDriver.CreateEndpoint', 'NetworkDriver.EndpointOperInfo', 'NetworkDriver.DeleteEndpoint', 'NetworkDriver.Join', 'NetworkDriver.Leave',
  'NetworkDriver.ProgramExternalConnectivity', 'NetworkDriver.RevokeExternalConnectivity', 'NetworkDriver.DiscoverNew', 'NetworkDriver.DiscoverDelete',
  'IpamDriver.RequestPool', 'IpamDriver.ReleasePool', 'IpamDriver.RequestAddress', 'IpamDriver.ReleaseAddress',
];

t.test('malformed bodies: 400 with Err naming the problem, for every method that takes one', async (t) => {
  const w = world();
  for (const m of BODY_METHODS) {
    for (const bad of ['', '{', 'null', '[]', '"x"', '{"NetworkID":5,"PoolID":7,"DiscoveryType":"x","Options":3}']) {
      const r = await w.call(`/${m}`, bad);
      t.equal(r.status, 400, `${m} ${JSON.stringify(bad)}: 400`);
      t.match(r.body['Err'], new RegExp(`^${m.replace('.', '\\.')}: (request body is not JSON|invalid request body)`), `${m} ${JSON.stringify(bad)}: Err says why`);
    }
  }
  const r = await w.call('/NetworkDriver.CreateNetwork', { NetworkID: NET, IPv4Data: [{ Pool: 7 }] });
  t.match(r.body['Err'], /IPv4Data\[0\]\.Pool/, 'the field is named');
  const ok = await w.call('/NetworkDriver.Leave', { NetworkID: NET, EndpointID: EP1, Extra: 'a newer dockerd field' });
  t.same(ok, { status: 200, body: {} }, 'unknown fields are ignored, as Go decoders do');
});

t.test('unknown methods answer 404; argument-less methods ignore the body', async (t) => {
  const w = world();
  for (const p of ['/NetworkDriver.Bogus', '/IpamDriver.GwAllocCheck', '/__proto__', '/constructor', '/toString', '/', '/Plugin.Activate/x']) {
    const r = await w.call(p, '{}');
    t.equal(r.status, 404, `${p}: 404`);
    t.match(r.body['Err'], /unknown method/);
  }
  t.same(await w.call('/Plugin.Activate', 'not json'), { status: 200, body: { Implements: ['NetworkDriver', 'IpamDriver'] } });
  t.same((await w.call('/NetworkDriver.GetCapabilities')).body, { Scope: 'local', ConnectivityScope: 'local' });
  t.same((await w.call('/IpamDriver.GetCapabilities')).body, { RequiresMACAddress: false, RequiresRequestReplay: false });
  t.same((await w.call('/IpamDriver.GetDefaultAddressSpaces')).body, { LocalDefaultAddressSpace: 'tsnet-local', GlobalDefaultAddressSpace: 'tsnet-global' });
  t.same((await w.call('/NetworkDriver.GwAllocCheck', { Options: null })).body, { SkipIPv4: false, SkipIPv6: false });
  t.same((await w.call('/NetworkDriver.AllocateNetwork', { NetworkID: NET, Options: null, IPv4Data: null, IPv6Data: null })).body, { Options: {} });
  t.same((await w.call('/NetworkDriver.FreeNetwork', { NetworkID: NET })).body, {});
  t.same((await w.call('/NetworkDriver.DiscoverNew', { DiscoveryType: 1, DiscoveryData: { Address: '192.0.2.1', self: true } })).body, {});
  t.same((await w.call('/NetworkDriver.DiscoverDelete', { DiscoveryType: 1, DiscoveryData: null })).body, {});
});

t.test('application errors: Err for NetworkDriver, Error for IpamDriver, with the field named', async (t) => {
  const w = world();
  const pool = await makeNetwork(w);
  const cases: [string, unknown, string, RegExp][] = [
    ['/IpamDriver.RequestPool', { Pool: '', SubPool: '10.1.0.0/25', V6: false }, 'Error', /^SubPool: /],
    ['/IpamDriver.RequestPool', { Pool: '10.77.0.0/16', V6: false }, 'Error', /overlaps/],
    ['/IpamDriver.RequestPool', { Pool: '10.9.0.0/24', V6: true }, 'Error', /^Pool: .*V6/],
    ['/IpamDriver.RequestPool', { Pool: '10.9.0.1/24', V6: false }, 'Error', /Pool.*host bits/],
    ['/IpamDriver.RequestAddress', { PoolID: 'nope', Address: '' }, 'Error', /^PoolID "nope"/],
    ['/IpamDriver.RequestAddress', { PoolID: 'docker-0000000000000000-ipv4', Address: '' }, 'Error', /no such pool/],
    ['/IpamDriver.RequestAddress', { PoolID: pool, Address: '10.1.2.3' }, 'Error', /10\.1\.2\.3/],
    ['/IpamDriver.RequestAddress', { PoolID: pool, Address: 'x' }, 'Error', /^Address: /],
    ['/NetworkDriver.CreateNetwork', { NetworkID: 'Not An Id', IPv4Data: [] }, 'Err', /^NetworkID: /],
    ['/NetworkDriver.CreateNetwork', { NetworkID: 'b'.repeat(64), IPv4Data: [] }, 'Err', /^IPv4Data: .*no subnet/],
    ['/NetworkDriver.CreateNetwork', { NetworkID: 'b'.repeat(64), IPv4Data: [{ Pool: '10.5.0.0/24', Gateway: '10.6.0.1/24' }] }, 'Err', /IPv4Data\[0\]\.Gateway: 10\.6\.0\.1 is outside/],
    ['/NetworkDriver.CreateNetwork', { NetworkID: 'b'.repeat(64), Options: { 'com.docker.network.generic': { mtu: 'big' } }, IPv4Data: [{ Pool: '10.5.0.0/24', Gateway: '10.5.0.1/24' }] }, 'Err', /option mtu/],
    ['/NetworkDriver.CreateEndpoint', { NetworkID: 'c'.repeat(64), EndpointID: EP1, Interface: { Address: '10.77.0.5/24' } }, 'Err', /network c+ not found/],
    ['/NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP1, Interface: { Address: '10.99.0.5/24' } }, 'Err', /^Interface\.Address: 10\.99\.0\.5\/24 is outside/],
    ['/NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP1, Interface: null }, 'Err', /^Interface\.Address: an address is required/],
    ['/NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP1, Interface: { Address: '10.77.0.5/24', MacAddress: '01:00:00:00:00:01' } }, 'Err', /^Interface\.MacAddress: /],
    ['/NetworkDriver.Join', { NetworkID: NET, EndpointID: EP2, SandboxKey: '/x' }, 'Err', /endpoint 46ef.* not found/],
    ['/NetworkDriver.EndpointOperInfo', { NetworkID: NET, EndpointID: EP2 }, 'Err', /not found/],
    ['/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET, EndpointID: 'Not An Id', Options: {} }, 'Err', /^EndpointID: /],
    ['/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET, EndpointID: EP2, Options: { 'com.docker.network.portmap': [{ Proto: 6, Port: 80, HostPort: 80 }] } }, 'Err', /endpoint 46ef.* not found/],
    ['/NetworkDriver.RevokeExternalConnectivity', { NetworkID: 'x y', EndpointID: EP2 }, 'Err', /^NetworkID: /],
  ];
  for (const [path, body, key, re] of cases) {
    const r = await w.call(path, body);
    t.equal(r.status, 200, `${path} ${JSON.stringify(body)}: 200`);
    t.match(r.body[key], re, `${path}: ${key} ${String(r.body[key])}`);
    t.same(Object.keys(r.body), [key], `${path}: only ${key}`);
  }
  t.same(await w.hostLinks(), ['br-c6074ca84c1d'], 'failed endpoint creations left no veth');
  t.same(await w.records('docker-endpoints'), [], 'and no endpoint record');
});

t.test('a static address cannot be handed out twice; the gateway is the pool\'s unless Docker asks for another', async (t) => {
  const w = world();
  const pool = (await w.call('/IpamDriver.RequestPool', { Pool: '10.8.0.0/24', V6: false })).body['PoolID'];
  t.same((await w.call('/IpamDriver.RequestAddress', { PoolID: pool, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } })).body, { Address: '10.8.0.1/24', Data: {} });
  t.same((await w.call('/IpamDriver.RequestAddress', { PoolID: pool, Address: '10.8.0.9', Options: null })).body, { Address: '10.8.0.9/24', Data: {} });
  t.match((await w.call('/IpamDriver.RequestAddress', { PoolID: pool, Address: '10.8.0.9', Options: null })).body, { Error: /in use/ });
  t.same((await w.call('/IpamDriver.ReleaseAddress', { PoolID: pool, Address: '10.8.0.9' })).body, {});
  t.same((await w.call('/IpamDriver.RequestAddress', { PoolID: pool, Address: '10.8.0.9', Options: null })).body, { Address: '10.8.0.9/24', Data: {} }, 'free again after release');
  t.same((await w.call('/IpamDriver.RequestAddress', { PoolID: pool, Address: '10.8.0.254', Options: { RequestAddressType: 'com.docker.network.gateway' } })).body, { Address: '10.8.0.254/24', Data: {} });
  t.match((await w.call('/IpamDriver.RequestAddress', { PoolID: pool, Address: '10.8.0.254', Options: null })).body, { Error: /in use/ }, 'a --gateway address is reserved');
  const v6 = await w.call('/IpamDriver.RequestPool', { Pool: '', V6: true });
  t.match(v6.body, { PoolID: /-ipv6$/, Pool: /^fd[0-9a-f:]+\/64$/ }, 'a default IPv6 pool');
  t.same((await w.call('/IpamDriver.ReleasePool', { PoolID: pool })).body, {});
  t.same((await w.call('/IpamDriver.ReleasePool', { PoolID: pool })).body, {}, 'release twice');
  t.same((await w.call('/IpamDriver.ReleaseAddress', { PoolID: pool, Address: '10.8.0.9' })).body, {}, 'release in a gone pool');
});

t.test('rollback: a failing kernel or firewall leaves no record, link or rule', async (t) => {
  const w = world();
  w.firewall.failNext('UNAVAILABLE', 'ensureNetwork');
  const pool = (await w.call('/IpamDriver.RequestPool', { Pool: '10.77.0.0/24', V6: false })).body['PoolID'] as string;
  const r = await w.call('/NetworkDriver.CreateNetwork', { NetworkID: NET, IPv4Data: [{ Pool: '10.77.0.0/24', Gateway: '10.77.0.1/24' }] });
  t.match(r.body, { Err: /create network docker-c6074ca84c1d/ });
  t.same(await w.hostLinks(), [], 'bridge removed');
  t.same(await w.records('docker-networks'), [], 'record removed');

  await makeNetwork(w, '10.78.0.0/24');
  const pool2 = (await w.ipam.listPools()).find((p) => p.subnet === '10.78.0.0/24')?.poolId as string;
  w.kernel.failNext('setLink', new TsnetError('NOT_FOUND', 'Cannot find device'));
  const a = await w.call('/IpamDriver.RequestAddress', { PoolID: pool2, Address: '' });
  const e = await w.call('/NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP1, Interface: { Address: a.body['Address'] } });
  t.match(e.body, { Err: /create endpoint 40657e683980/ });
  t.same(await w.hostLinks(), ['br-c6074ca84c1d'], 'veth pair removed');
  t.same(await w.records('docker-endpoints'), [], 'endpoint record removed');

  // A port already published by another endpoint: the second endpoint gets an error and no rule.
  await makeEndpoint(w, pool2, EP1);
  await makeEndpoint(w, pool2, EP2);
  const pm = (port: number) => ({ 'com.docker.network.portmap': [{ Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: port, HostPortEnd: port }, { Proto: 17, IP: '', Port: 53, HostIP: '', HostPort: 5353, HostPortEnd: 5353 }] });
  t.same((await w.call('/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET, EndpointID: EP1, Options: pm(8080) })).body, {});
  const clash = await w.call('/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET, EndpointID: EP2, Options: pm(8081) });
  t.match(clash.body, { Err: /publish ports of 46ef0957a011/ }, 'udp 5353 is taken');
  t.equal(w.firewall.ports().get(EP1 as EndpointId)?.length, 2, 'the first endpoint keeps its ports');
  t.notOk(w.firewall.ports().has(EP2 as EndpointId), 'the second has none (its tcp 8081 was withdrawn)');
  const bad = await w.call('/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET, EndpointID: EP2, Options: { 'com.docker.network.portmap': [{ Proto: 99, Port: 1, HostPort: 1 }] } });
  t.match(bad.body, { Err: /portmap"\]\[0\]\.Proto: unknown protocol number 99/ });
  const eph = await w.call('/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET, EndpointID: EP2, Options: { 'com.docker.network.portmap': [{ Proto: 6, Port: 80, HostPort: 0 }] } });
  t.same(eph.body, {}, 'HostPort 0: an ephemeral port is picked');
  const got = w.firewall.ports().get(EP2 as EndpointId)?.[0]?.hostPorts.start ?? 0;
  t.ok(got >= 32768 && got <= 60999, `ephemeral port ${got} from the kernel's local port range, as for every door`);
  t.same((await w.call('/NetworkDriver.RevokeExternalConnectivity', { NetworkID: NET, EndpointID: EP2 })).body, {});
  t.notOk(w.firewall.ports().has(EP2 as EndpointId), 'revoked');
  void pool;
});

t.test('teardown is idempotent and Join reports what dockerd needs', async (t) => {
  const w = world();
  const pool = await makeNetwork(w, '10.77.0.0/24', { 'com.docker.network.internal': true });
  await makeEndpoint(w, pool, EP1);
  const j = await w.call('/NetworkDriver.Join', { NetworkID: NET, EndpointID: EP1, SandboxKey: '/var/run/docker/netns/x', Options: {} });
  t.match(j.body, { InterfaceName: { DstPrefix: 'eth' }, StaticRoutes: [], DisableGatewayService: true }, 'internal: no gateway, no gwbridge');
  t.notOk('Gateway' in j.body, 'no Gateway on an internal network');
  const src = (j.body['InterfaceName'] as { SrcName: string }).SrcName;
  const links = await w.kernel.netlinkFor(HOST_NETNS).listLinks();
  t.ok(links.some((l) => l.name === src), 'the container end waits in the host namespace for dockerd');
  t.equal(w.firewall.networks().get(NET as NetworkId)?.internal, true, 'the firewall knows it is internal');
  for (let i = 0; i < 2; i++) {
    t.same((await w.call('/NetworkDriver.Leave', { NetworkID: NET, EndpointID: EP1 })).body, {}, `Leave #${i + 1}`);
    t.same((await w.call('/NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: EP1 })).body, {}, `DeleteEndpoint #${i + 1}`);
    t.same((await w.call('/NetworkDriver.RevokeExternalConnectivity', { NetworkID: NET, EndpointID: EP1 })).body, {}, `Revoke #${i + 1}`);
    t.same((await w.call('/NetworkDriver.DeleteNetwork', { NetworkID: NET })).body, {}, `DeleteNetwork #${i + 1}`);
  }
  t.same(await w.hostLinks(), [], 'nothing left');
});

t.test('many concurrent endpoints on one network get distinct addresses and interfaces', async (t) => {
  const w = world();
  const pool = await makeNetwork(w, '10.77.0.0/24');
  const ids = Array.from({ length: 24 }, (_, i) => createHash('sha256').update(String(i)).digest('hex'));
  const addrs = await Promise.all(ids.map((id) => makeEndpoint(w, pool, id)));
  t.equal(new Set(addrs).size, ids.length, 'distinct addresses');
  t.equal((await w.hostLinks()).filter((n) => n.startsWith('veth')).length, ids.length, 'one host veth each');
  await Promise.all(ids.map((id) => w.call('/NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: id })));
  t.same(await w.hostLinks(), ['br-c6074ca84c1d']);
});

t.test('restore re-creates a bridge that vanished (plugin or host restart)', async (t) => {
  const w = world();
  await makeNetwork(w, '10.77.0.0/24');
  await w.kernel.netlinkFor(HOST_NETNS).removeLink('br-c6074ca84c1d' as never);
  t.same(await w.network.restore(), ['docker-c6074ca84c1d'], 'by name');
  t.same(await w.hostLinks(), ['br-c6074ca84c1d']);
  t.same(await w.network.restore(), [], 'nothing to do the second time');
});
