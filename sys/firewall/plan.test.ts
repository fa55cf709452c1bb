import t from 'tap';
import type { EndpointId, IfName, IpAddr, NetworkId, Port, Prefix } from '../../core/net.js';
import type { EndpointPorts, NetworkPolicy, PortMapping } from './api.js';
import { SAMPLE_NETWORKS, SAMPLE_PORTS, sampleMapping as m } from './fake.js';
import {
  atomsConflict,
  checkFirewallName,
  diffAtoms,
  dnatAtoms,
  dnatShape,
  planBase,
  planNetwork,
  planPorts,
  validateEndpointPorts,
  validateNetworkPolicy,
  type DnatAtom,
} from './plan.js';
import { goldenIn } from '../../test/helpers/golden.js';

const golden = goldenIn('firewall');

const P = (n: number): Port => n as Port;
const r = (a: number, b = a): { start: Port; end: Port } => ({ start: P(a), end: P(b) });

const POLICIES = SAMPLE_NETWORKS;
const PORTS = SAMPLE_PORTS;

t.test('planNetwork: golden IR for several intents', async (t) => {
  for (const [name, p] of Object.entries(POLICIES)) {
    await golden(t, `plan-network-${name}.json`, `${JSON.stringify(planNetwork(validateNetworkPolicy(p)), null, 2)}\n`);
  }
  await golden(t, 'plan-base.json', `${JSON.stringify(planBase(), null, 2)}\n`);
});

t.test('planNetwork: the behaviour in words', async (t) => {
  const dual = planNetwork(validateNetworkPolicy(POLICIES['dual-stack-masquerade'] as NetworkPolicy));
  t.same(dual.filter((x) => x.kind === 'masquerade').map((x) => x.kind === 'masquerade' && x.from), ['10.88.0.0/24', 'fd88::/64'], 'masquerade per subnet');
  t.ok(dual.some((x) => x.kind === 'forward-in' && x.match === 'published' && x.verdict === 'accept'), 'published ports accepted');
  t.ok(dual.some((x) => x.kind === 'forward-out' && x.verdict === 'accept'), 'egress accepted');
  const internal = planNetwork(validateNetworkPolicy(POLICIES['internal'] as NetworkPolicy));
  t.notOk(internal.some((x) => x.kind.startsWith('masquerade')), 'internal: no masquerade even when asked');
  t.ok(internal.some((x) => x.kind === 'forward-out' && x.verdict === 'drop'), 'internal: no egress');
  t.notOk(internal.some((x) => x.kind === 'forward-in' && x.match === 'published'), 'internal: no ingress through published ports');
  const quiet = planNetwork(validateNetworkPolicy(POLICIES['icc-off-no-masquerade'] as NetworkPolicy));
  t.ok(quiet.some((x) => x.kind === 'forward-in' && x.match === 'same-bridge' && x.verdict === 'drop'), 'icc off drops same-bridge');
  t.notOk(quiet.some((x) => x.kind === 'masquerade'), 'masquerade off');
  t.same(quiet.at(-1)?.kind, 'masquerade-loopback', 'loopback masquerade for 127.0.0.1 publishing');
});

t.test('planPorts: golden IR, shapes and atoms', async (t) => {
  const v = validateEndpointPorts(PORTS);
  const rules = planPorts(v);
  await golden(t, 'plan-ports.json', `${JSON.stringify(rules, null, 2)}\n`);
  t.same(rules.map(dnatShape), ['port', 'port', 'range', 'range-to-port', 'shifted', 'range', 'port', 'range-to-port']);
  const shifted = dnatAtoms(rules[4] as (typeof rules)[number]);
  t.same(shifted.map((a) => [a.hostPorts.start, a.toPorts.start]), [[6000, 7000], [6001, 7001], [6002, 7002]], 'a shifted range is one atom per port');
  t.equal(dnatAtoms(rules[2] as (typeof rules)[number]).length, 1, 'a same range is one atom');
  t.equal(rules[0]?.family, 4);
  t.equal(rules[6]?.family, 6);
  t.equal(rules[1]?.hostIp, '192.168.1.10');
});

t.test('validateNetworkPolicy: every field, nothing else', async (t) => {
  const ok = POLICIES['dual-stack-masquerade'] as NetworkPolicy;
  const bad = (patch: Record<string, unknown>, field: RegExp): void => {
    t.throws(() => validateNetworkPolicy({ ...ok, ...patch } as unknown as NetworkPolicy), { code: 'INVALID_CONFIG', message: field }, `${JSON.stringify(patch)} names ${field}`);
  };
  bad({ networkId: 'Bad Id' }, /^networkId/);
  bad({ bridge: 'a/b' }, /^bridge/);
  bad({ bridge: 'waytoolongbridgename' }, /^bridge/);
  bad({ subnets: '10.0.0.0/8' }, /^subnets/);
  bad({ subnets: ['10.0.0.0/8', '10.1.0.0/33'] }, /^subnets\[1\]/);
  bad({ masquerade: 'yes' }, /^masquerade/);
  bad({ internal: 1 }, /^internal/);
  bad({ icc: undefined }, /^icc/);
  t.throws(() => validateNetworkPolicy(null as unknown as NetworkPolicy), { code: 'INVALID_CONFIG' });
  const v = validateNetworkPolicy({ ...ok, subnets: ['10.88.0.5/24' as Prefix, '10.88.0.0/24' as Prefix, 'FD88::1/64' as Prefix] });
  t.same(v.subnets, ['10.88.0.0/24', 'fd88::/64'], 'host bits cleared, duplicates merged, canonical text');
});

t.test('validateEndpointPorts: rejects bad input naming the field', async (t) => {
  const one = (mapping: unknown): EndpointPorts => ({ ...PORTS, mappings: [m('tcp', [1], [1], '10.88.0.2'), mapping as PortMapping] });
  const bad = (mapping: unknown, field: RegExp, why?: RegExp): void => {
    t.throws(() => validateEndpointPorts(one(mapping)), { code: 'INVALID_CONFIG', message: field }, `${field}`);
    if (why) t.throws(() => validateEndpointPorts(one(mapping)), { message: why });
  };
  bad(m('tcp', [0], [80], '10.88.0.2'), /^mappings\[1\]\.hostPort\.start/, /1-65535/);
  bad(m('tcp', [65536], [80], '10.88.0.2'), /^mappings\[1\]\.hostPort\.start/);
  bad(m('tcp', [80], [70000], '10.88.0.2'), /^mappings\[1\]\.containerPort\.start/);
  bad({ ...m('tcp', [80], [80], '10.88.0.2'), hostPort: { start: 80, end: 1.5 } }, /^mappings\[1\]\.hostPort\.end/);
  bad({ ...m('tcp', [80], [80], '10.88.0.2'), hostPort: { start: '80', end: 80 } }, /^mappings\[1\]\.hostPort\.start/);
  bad(m('tcp', [9000, 8000], [80], '10.88.0.2'), /^mappings\[1\]\.hostPort/, /reversed range/);
  bad(m('tcp', [8000, 8100], [8000, 8050], '10.88.0.2'), /^mappings\[1\]\.containerPort/, /length 51 differs from hostPort range length 101/);
  bad(m('tcp', [80], [80, 81], '10.88.0.2'), /^mappings\[1\]\.containerPort/, /length/);
  bad(m('tcp', [80], [80], '10.88.0.2', 'fd00::1'), /^mappings\[1\]\.hostIp/, /family/);
  bad(m('tcp', [80], [80], 'fd88::2', '10.0.0.1'), /^mappings\[1\]\.hostIp/, /family/);
  bad(m('tcp', [80], [80], 'fd88::2', '::1'), /^mappings\[1\]\.hostIp/, /IPv6 loopback/);
  bad(m('tcp', [80], [80], '10.88.0.2', '224.0.0.1'), /^mappings\[1\]\.hostIp/, /multicast/);
  bad(m('tcp', [80], [80], '10.88.0.2', 'nope'), /^mappings\[1\]\.hostIp/);
  bad(m('tcp', [80], [80], '127.0.0.1'), /^mappings\[1\]\.containerIp/, /loopback/);
  bad(m('tcp', [80], [80], '0.0.0.0'), /^mappings\[1\]\.containerIp/);
  bad(m('tcp', [80], [80], 'fe80::1'), /^mappings\[1\]\.containerIp/, /linkLocal/);
  bad({ ...m('tcp', [80], [80], '10.88.0.2'), proto: 'icmp' }, /^mappings\[1\]\.proto/);
  bad('8080:80', /^mappings\[1\]/);
  t.throws(() => validateEndpointPorts({ ...PORTS, endpointId: 'UPPER' as EndpointId }), { code: 'INVALID_CONFIG', message: /^endpointId/ });
  t.throws(() => validateEndpointPorts({ ...PORTS, networkId: '' as NetworkId }), { code: 'INVALID_CONFIG', message: /^networkId/ });
  t.throws(() => validateEndpointPorts({ ...PORTS, bridge: 'a b' as IfName }), { code: 'INVALID_CONFIG', message: /^bridge/ });
  t.throws(() => validateEndpointPorts({ ...PORTS, mappings: undefined } as unknown as EndpointPorts), { code: 'INVALID_CONFIG', message: /^mappings/ });
});

t.test('validateEndpointPorts: conflicts inside one request, duplicates, normalization', async (t) => {
  const req = (...mappings: PortMapping[]): EndpointPorts => ({ ...PORTS, mappings });
  t.throws(() => validateEndpointPorts(req(m('tcp', [8080], [80], '10.88.0.2'), m('tcp', [8080], [81], '10.88.0.2'))), { code: 'INVALID_CONFIG', message: /^mappings\[1\]\.hostPort: .*overlap mappings\[0\]/ });
  t.throws(() => validateEndpointPorts(req(m('tcp', [8000, 8100], [8000, 8100], '10.88.0.2'), m('udp', [1], [1], '10.88.0.2'), m('tcp', [8050, 8200], [8050, 8200], '10.88.0.2'))), { message: /^mappings\[2\]\.hostPort: .*overlap mappings\[0\]/ });
  t.doesNotThrow(() => validateEndpointPorts(req(m('tcp', [8080], [80], '10.88.0.2'), m('udp', [8080], [80], '10.88.0.2'))), 'tcp and udp do not collide');
  t.doesNotThrow(() => validateEndpointPorts(req(m('tcp', [8080], [80], '10.88.0.2'), m('tcp', [8080], [80], 'fd88::2'))), 'IPv4 and IPv6 do not collide');
  t.doesNotThrow(() => validateEndpointPorts(req(m('tcp', [8080], [80], '10.88.0.2', '10.0.0.1'), m('tcp', [8080], [80], '10.88.0.2'))), 'a host address and "any" do not collide');
  const dup = validateEndpointPorts(req(m('tcp', [8080], [80], '10.88.0.2'), m('tcp', [8080], [80], '10.88.0.2')));
  t.equal(dup.mappings.length, 1, 'exact duplicates merged');
  const any = validateEndpointPorts(req(m('tcp', [8080], [80], '10.88.0.2', '0.0.0.0'), m('tcp', [9090], [80], 'fd88::2', '::')));
  t.same(any.mappings.map((x) => x.hostIp), [undefined, undefined], '0.0.0.0 and :: mean every local address');
  t.throws(() => validateEndpointPorts(req(m('tcp', [8080], [80], 'fd88::2', '0.0.0.0'))), { message: /^mappings\[0\]\.hostIp.*family/ }, '0.0.0.0 with an IPv6 target');
  const big = validateEndpointPorts(req(...Array.from({ length: 5000 }, (_, i) => m('tcp', [10_000 + i], [80], '10.88.0.2'))));
  t.equal(big.mappings.length, 5000, 'large requests validate (O(n log n))');
});

t.test('atoms: conflicts, sameness and the diff', async (t) => {
  const base: DnatAtom = { shape: 'port', owner: 'a' as EndpointId, family: 4, proto: 'tcp', hostPorts: r(80), to: '10.0.0.2' as IpAddr, toPorts: r(80) };
  t.notOk(atomsConflict(base, base), 'an atom does not conflict with itself');
  t.ok(atomsConflict(base, { ...base, owner: 'b' as EndpointId }), 'same port, other owner');
  t.ok(atomsConflict(base, { ...base, to: '10.0.0.3' as IpAddr }), 'same port, other target');
  t.notOk(atomsConflict(base, { ...base, proto: 'udp' }), 'other proto');
  t.notOk(atomsConflict(base, { ...base, hostIp: '10.0.0.1' as IpAddr }), 'other host address scope');
  t.notOk(atomsConflict(base, { ...base, shape: 'range', hostPorts: r(1, 100), toPorts: r(1, 100) }), 'other shape (reservation layer business)');
  const ra: DnatAtom = { ...base, shape: 'range', hostPorts: r(100, 200), toPorts: r(100, 200) };
  t.ok(atomsConflict(ra, { ...ra, hostPorts: r(200, 300), toPorts: r(200, 300) }), 'ranges touching at one port overlap');
  t.notOk(atomsConflict(ra, { ...ra, hostPorts: r(201, 300), toPorts: r(201, 300) }), 'adjacent ranges do not');
  const d = diffAtoms([base, ra], [base, { ...base, hostPorts: r(81), toPorts: r(81) }, { ...ra, owner: 'z' as EndpointId }]);
  t.equal(d.present.length, 1);
  t.equal(d.missing.length, 1);
  t.equal(d.conflicts.length, 1);
  t.equal(d.conflicts[0]?.existing, ra);
});

t.test('firewall name', async (t) => {
  t.equal(checkFirewallName(undefined), 'tsnet');
  t.equal(checkFirewallName('tsnet_t2'), 'tsnet_t2');
  t.throws(() => checkFirewallName('TSNET'), { code: 'INVALID_CONFIG' });
  t.throws(() => checkFirewallName('a-b'), { code: 'INVALID_CONFIG' });
  t.throws(() => checkFirewallName('abcdefghijklmn'), { code: 'INVALID_CONFIG' });
});
