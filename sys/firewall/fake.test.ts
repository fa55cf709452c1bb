import t from 'tap';
import type { EndpointId, IfName, NetworkId } from '../../core/net.js';
import type { NetworkPolicy } from './api.js';
import { createFakeFirewall, firewallScenario, SAMPLE_NETWORKS, SAMPLE_PORTS, sampleMapping as m } from './fake.js';
import { createNoneFirewall } from './none.js';

/**
 * What every backend must observe for firewallScenario. The privileged tests run the same
 * scenario against nftables and iptables in a real namespace and compare with the fake's result,
 * so this list is also what the real backends do.
 */
const EXPECTED = [
  'list empty: {"networks":[],"endpoints":[]}',
  'ensure n1: ok',
  'ensure n1 again: ok',
  'ensure n2 internal: ok',
  'ensure n3 on the bridge of n1: ALREADY_EXISTS',
  'ensure n3 overlapping n1: ALREADY_EXISTS',
  'ensure n3 bad subnet: INVALID_CONFIG',
  'list networks: {"networks":["n1","n2"],"endpoints":[]}',
  'ports e1: ok',
  'ports e1 again: ok',
  'ports e1 subset: ok',
  'ports e1 one port of its shifted range: ok',
  'ports e2: ok',
  'ports e3 taking 8080: ALREADY_EXISTS',
  'ports e3 overlapping a range: ALREADY_EXISTS',
  'ports e3 into a shifted range: ALREADY_EXISTS',
  'ports e3 bad port: INVALID_CONFIG',
  'ports e3 same port other address: ok',
  'list all: {"networks":["n1","n2"],"endpoints":["e1","e2","e3"]}',
  'remove ports e1: ok',
  'remove ports e1 again: ok',
  'ports e3 takes 8080 now: ok',
  'list after port removal: {"networks":["n1","n2"],"endpoints":["e2","e3"]}',
  'remove network n1: ok',
  'remove network n1 again: ok',
  'remove network unknown: ok',
  'ensure n3 now that n1 is gone: ok',
  'list after network removal: {"networks":["n2","n3"],"endpoints":["e2","e3"]}',
  'remove all: ok',
  'remove all again: ok',
  'list after remove all: {"networks":[],"endpoints":[]}',
  'remove ports on empty: ok',
  'remove network on empty: ok',
];

const BRIDGES = ['tsb1', 'tsb2', 'tsb3'] as [IfName, IfName, IfName];

t.test('the fake behaves like the real backends (shared scenario)', async (t) => {
  t.same(await firewallScenario(createFakeFirewall(), { bridges: BRIDGES }), EXPECTED);
});

t.test('the fake records calls and state', async (t) => {
  const fw = createFakeFirewall({ backend: 'iptables' });
  t.equal(fw.backend, 'iptables');
  const net = SAMPLE_NETWORKS['dual-stack-masquerade'] as NetworkPolicy;
  await fw.ensureNetwork(net);
  await fw.ensurePorts(SAMPLE_PORTS);
  t.same(fw.calls.map((c) => c.op), ['ensureNetwork', 'ensurePorts']);
  t.same(fw.calls[0]?.arg, net);
  t.same([...fw.networks().keys()], ['net1']);
  t.equal(fw.ports().get('ep-1' as EndpointId)?.length, SAMPLE_PORTS.mappings.length);
  await fw.ensurePorts({ ...SAMPLE_PORTS, mappings: [m('tcp', [8443], [443], '10.88.0.2')] });
  t.equal(fw.ports().get('ep-1' as EndpointId)?.length, SAMPLE_PORTS.mappings.length + 1, 'additive');
});

t.test('failNext: the next call fails and changes nothing', async (t) => {
  const fw = createFakeFirewall();
  fw.failNext('UNAVAILABLE', 'ensurePorts');
  await fw.ensureNetwork(SAMPLE_NETWORKS['internal'] as NetworkPolicy);
  t.same((await fw.list()).networks, ['secret'], 'other operations unaffected');
  await t.rejects(fw.ensurePorts(SAMPLE_PORTS), { code: 'UNAVAILABLE', message: /injected/ });
  t.same((await fw.list()).endpoints, [], 'nothing applied');
  await fw.ensurePorts(SAMPLE_PORTS);
  t.same((await fw.list()).endpoints, ['ep-1'], 'only the next call failed');
  fw.failNext();
  fw.failNext('NOT_FOUND');
  await t.rejects(fw.removeNetwork('secret' as NetworkId), { code: 'INTERNAL' });
  await t.rejects(fw.removeAll(), { code: 'NOT_FOUND' });
  t.same(await fw.list(), { networks: ['secret'], endpoints: ['ep-1'] }, 'failures are stacked, each consumed once');
  t.equal(fw.calls.length, 9, 'failed calls are recorded too');
});

t.test('the none backend validates and does nothing', async (t) => {
  const fw = createNoneFirewall();
  t.equal(fw.backend, 'none');
  await fw.ensureNetwork(SAMPLE_NETWORKS['internal'] as NetworkPolicy);
  await fw.ensurePorts(SAMPLE_PORTS);
  await fw.removePorts('ep-1' as EndpointId);
  await fw.removeNetwork('secret' as NetworkId);
  await fw.removeAll();
  t.same(await fw.list(), { networks: [], endpoints: [] });
  await t.rejects(fw.ensurePorts({ ...SAMPLE_PORTS, mappings: [m('tcp', [65_536], [80], '10.88.0.2')] }), { code: 'INVALID_CONFIG', message: /mappings\[0\]\.hostPort\.start/ });
  await t.rejects(fw.ensureNetwork({ ...(SAMPLE_NETWORKS['internal'] as NetworkPolicy), icc: 'no' as unknown as boolean }), { code: 'INVALID_CONFIG', message: /^icc/ });
});
