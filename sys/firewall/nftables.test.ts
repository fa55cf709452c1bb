import t from 'tap';
import { TsnetError } from '../../core/errors.js';
import type { EndpointId, IfName, NetworkId, Prefix } from '../../core/net.js';
import type { Argv, RunOptions, RunResult } from '../exec.js';
import type { NetworkPolicy } from './api.js';
import { SAMPLE_NETWORKS, SAMPLE_PORTS, sampleMapping as m } from './fake.js';
import {
  classifyNftError,
  createNftablesFirewall,
  dispatchFor,
  networkOfChain,
  nftDeleteElementsScript,
  nftElementsScript,
  nftGetElementsScript,
  nftNetworkScript,
  nftRemoveAllScript,
  nftRemoveNetworkScript,
  nftSkeleton,
  ownsAllElements,
  parseNftState,
} from './nftables.js';
import { describeAtom, dnatAtoms, planNetwork, preparePorts, planPorts, validateEndpointPorts, validateNetworkPolicy, type DnatAtom } from './plan.js';
import { goldenIn } from '../../test/helpers/golden.js';

const golden = goldenIn('firewall');

/** `nft -j list table inet tsnet` after SAMPLE_NETWORKS.dual-stack-masquerade + SAMPLE_PORTS (nft 1.0.6, trimmed). */
const LISTED = JSON.stringify({
  nftables: [
    { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
    { table: { family: 'inet', name: 'tsnet', handle: 1 } },
    { map: { family: 'inet', name: 'ports4_addr', table: 'tsnet', type: ['ipv4_addr', 'inet_proto', 'inet_service'], handle: 5, map: 'ipv4_addr . inet_service', elem: [[{ elem: { val: { concat: ['192.168.1.10', 'udp', 5353] }, comment: 'ep-1' } }, { concat: ['10.88.0.2', 53] }]] } },
    { map: { family: 'inet', name: 'ports4_any', table: 'tsnet', type: ['inet_proto', 'inet_service'], handle: 6, map: 'ipv4_addr . inet_service', elem: [[{ elem: { val: { concat: ['tcp', 6000] }, comment: 'ep-1' } }, { concat: ['10.88.0.2', 7000] }], [{ elem: { val: { concat: ['tcp', 6001] }, comment: 'ep-1' } }, { concat: ['10.88.0.2', 7001] }], [{ elem: { val: { concat: ['tcp', 6002] }, comment: 'ep-1' } }, { concat: ['10.88.0.2', 7002] }], [{ elem: { val: { concat: ['tcp', 8080] }, comment: 'ep-1' } }, { concat: ['10.88.0.2', 80] }], [{ elem: { val: { concat: ['tcp', 9999] }, comment: 'other' } }, { concat: ['10.88.0.9', 99] }], [{ concat: ['tcp', 1234] }, { concat: ['10.88.0.9', 99] }]] } },
    { map: { family: 'inet', name: 'rangeto4_addr', table: 'tsnet', type: ['ipv4_addr', 'inet_proto', 'inet_service'], handle: 7, map: 'ipv4_addr . inet_service', flags: ['interval'], elem: [[{ elem: { val: { concat: ['127.0.0.1', 'tcp', { range: [7000, 7010] }] }, comment: 'ep-1' } }, { concat: ['10.88.0.2', 80] }]] } },
    { map: { family: 'inet', name: 'range4_any', table: 'tsnet', type: ['inet_proto', 'inet_service'], handle: 10, map: 'ipv4_addr', flags: ['interval'], elem: [[{ elem: { val: { concat: ['tcp', { range: [8000, 8100] }] }, comment: 'ep-1' } }, '10.88.0.2']] } },
    { map: { family: 'inet', name: 'ports6_any', table: 'tsnet', type: ['inet_proto', 'inet_service'], handle: 12, map: 'ipv6_addr . inet_service', elem: [[{ elem: { val: { concat: ['tcp', 8080] }, comment: 'ep-1' } }, { concat: ['fd88::2', 80] }]] } },
    { map: { family: 'inet', name: 'rangeto6_any', table: 'tsnet', type: ['inet_proto', 'inet_service'], handle: 14, map: 'ipv6_addr . inet_service', flags: ['interval'], elem: [[{ elem: { val: { concat: ['udp', { range: [4000, 4010] }] }, comment: 'ep-1' } }, { concat: ['fd88::2', 53] }]] } },
    { map: { family: 'inet', name: 'range6_addr', table: 'tsnet', type: ['ipv6_addr', 'inet_proto', 'inet_service'], handle: 15, map: 'ipv6_addr', flags: ['interval'], elem: [[{ elem: { val: { concat: ['fd00::1', 'sctp', { range: [3000, 3001] }] }, comment: 'ep-1' } }, 'fd88::2']] } },
    { map: { family: 'inet', name: 'fwd_in', table: 'tsnet', type: 'ifname', handle: 17, map: 'verdict', elem: [['tsbr0', { jump: { target: 'nw-net1-fwd-in' } }]] } },
    { map: { family: 'inet', name: 'fwd_out', table: 'tsnet', type: 'ifname', handle: 18, map: 'verdict', elem: [['tsbr0', { jump: { target: 'nw-net1-fwd-out' } }]] } },
    { map: { family: 'inet', name: 'nat_in', table: 'tsnet', type: 'ifname', handle: 19, map: 'verdict', elem: [['tsbr0', { jump: { target: 'nw-net1-nat-in' } }]] } },
    { map: { family: 'inet', name: 'nat_out4', table: 'tsnet', type: 'ipv4_addr', handle: 20, map: 'verdict', flags: ['interval'], elem: [[{ prefix: { addr: '10.88.0.0', len: 24 } }, { jump: { target: 'nw-net1-nat-out' } }], ['10.99.0.7', { jump: { target: 'nw-host-nat-out' } }]] } },
    { map: { family: 'inet', name: 'nat_out6', table: 'tsnet', type: 'ipv6_addr', handle: 21, map: 'verdict', flags: ['interval'], elem: [[{ prefix: { addr: 'fd88::', len: 64 } }, { jump: { target: 'nw-net1-nat-out' } }]] } },
    { chain: { family: 'inet', table: 'tsnet', name: 'nw-net1-fwd-in', handle: 1 } },
    { chain: { family: 'inet', table: 'tsnet', name: 'nw-net1-fwd-out', handle: 2 } },
    { chain: { family: 'inet', table: 'tsnet', name: 'nw-orphan-nat-in', handle: 3 } },
    { chain: { family: 'inet', table: 'tsnet', name: 'forward', handle: 4, type: 'filter', hook: 'forward', prio: 0, policy: 'accept' } },
    { chain: { family: 'inet', table: 'other', name: 'nw-foreign-fwd-in', handle: 4 } },
    { rule: { family: 'inet', table: 'tsnet', chain: 'forward', handle: 9, expr: [] } },
  ],
});

/** A scripted exec: records calls and answers with `reply(argv, input, callIndex)`. */
function fakeExec(reply: (argv: readonly string[], input: string | undefined, i: number) => RunResult | Error) {
  const calls: { argv: readonly string[]; input: string | undefined }[] = [];
  const exec = async (argv: Argv, opts: RunOptions): Promise<RunResult> => {
    if (argv[0] === 'dbus-send') throw new Error('org.freedesktop.DBus.Error.ServiceUnknown'); // no firewalld, even where a system bus runs
    const input = opts.input === undefined ? undefined : String(opts.input);
    // The host firewall's iptables (host-chains.ts): an empty one, nothing drops; tested in host-chains.test.ts.
    if (/^ip6?tables-save$/.test(argv[0] ?? '')) return { stdout: '', stderr: '' };
    calls.push({ argv, input });
    const r = reply(argv, input, calls.length - 1);
    if (r instanceof Error) throw r;
    return r;
  };
  return { exec, calls };
}

/** What sys/exec.ts throws for a failing nft. */
function nftFailure(argv: readonly string[], stderr: string): TsnetError {
  return new TsnetError('INTERNAL', `${argv.join(' ')}: ${stderr}`, { details: { argv, exitCode: 1, signal: null, stderr, stdout: '' } });
}
const OK: RunResult = { stdout: '', stderr: '' };

t.test('serialization: golden nft scripts', async (t) => {
  await golden(t, 'nft-skeleton.nft', `${nftSkeleton('tsnet').join('\n')}\n`);
  for (const [name, p] of Object.entries(SAMPLE_NETWORKS)) {
    const v = validateNetworkPolicy(p);
    await golden(t, `nft-network-${name}.nft`, nftNetworkScript('tsnet', v.networkId, planNetwork(v), []));
  }
  const atoms = planPorts(validateEndpointPorts(SAMPLE_PORTS)).flatMap(dnatAtoms);
  await golden(t, 'nft-ports-add.nft', nftElementsScript('tsnet', 'create', atoms));
  await golden(t, 'nft-ports-delete.nft', nftDeleteElementsScript('tsnet', atoms));
  const dual = validateNetworkPolicy(SAMPLE_NETWORKS['dual-stack-masquerade'] as NetworkPolicy);
  await golden(t, 'nft-network-remove.nft', nftRemoveNetworkScript('tsnet', dual.networkId, dispatchFor(planNetwork(dual))));
  t.equal(nftRemoveAllScript('tsnet'), 'add table inet tsnet\ndelete table inet tsnet\n', 'removeAll is idempotent in one transaction');
});

t.test('serialization: the properties that matter', async (t) => {
  const atoms = planPorts(validateEndpointPorts(SAMPLE_PORTS)).flatMap(dnatAtoms);
  const add = nftElementsScript('tsnet', 'create', atoms);
  t.match(add, /create element inet tsnet range4_any \{ tcp \. 8000-8100 comment "ep-1" : 10\.88\.0\.2 \}/, 'a same range is ONE element, port kept');
  t.match(add, /rangeto4_addr \{ 127\.0\.0\.1 \. tcp \. 7000-7010 comment "ep-1" : 10\.88\.0\.2 \. 80 \}/, 'N:1 is ONE element');
  t.match(add, /tcp \. 6001 comment "ep-1" : 10\.88\.0\.2 \. 7001/, 'shifted range: one element per port (nft 1.0.6 has no NAT offset)');
  t.notMatch(add, /add rule|chain|flush/, 'publishing ports adds elements only');
  t.equal(add.split('\n').filter(Boolean).length, 7, 'one statement per map touched');
  const dual = validateNetworkPolicy(SAMPLE_NETWORKS['dual-stack-masquerade'] as NetworkPolicy);
  const script = nftNetworkScript('tsnet', dual.networkId, planNetwork(dual), [{ map: 'fwd_in', key: 'oldbr', chain: 'nw-net1-fwd-in', owner: dual.networkId }]);
  t.match(script, /delete element inet tsnet fwd_in \{ "oldbr" \}/, 'stale dispatch removed');
  t.match(script, /add rule inet tsnet nw-net1-nat-out ip saddr 10\.88\.0\.0\/24 oifname != "tsbr0" masquerade/);
  t.match(script, /add rule inet tsnet nw-net1-fwd-in ct status dnat accept/);
  t.ok(script.indexOf('add chain inet tsnet nw-net1-nat-out') < script.indexOf('add map inet tsnet nat_out4'), 'network chains before the interval maps (nft 1.0.6 quirk)');
  t.notMatch(script, /create (table|chain)/, 'idempotent adds only');
});

t.test('parseNftState: ownership read back from the kernel', async (t) => {
  const s = parseNftState(LISTED, 'tsnet');
  const mine = s.ports.filter((a) => a.owner === 'ep-1');
  const want = planPorts(validateEndpointPorts(SAMPLE_PORTS)).flatMap(dnatAtoms);
  const byText = (a: DnatAtom, b: DnatAtom): number => describeAtom(a).localeCompare(describeAtom(b)) || a.shape.localeCompare(b.shape);
  t.same([...mine].sort(byText), [...want].sort(byText), 'every element parses back to the atom it was written from');
  t.same(s.ports.filter((a) => a.owner !== 'ep-1').map((a) => a.owner), ['other'], 'an element without an owner comment is not ours');
  t.same(s.dispatch.map((d) => `${d.map} ${d.key} ${d.owner}`), ['fwd_in tsbr0 net1', 'fwd_out tsbr0 net1', 'nat_in tsbr0 net1', 'nat_out4 10.88.0.0/24 net1', 'nat_out4 10.99.0.7/32 host', 'nat_out6 fd88::/64 net1']);
  t.same(s.chains, ['nw-net1-fwd-in', 'nw-net1-fwd-out', 'nw-orphan-nat-in', 'forward'], 'chains of our table only');
  t.equal(networkOfChain('nw-a-b-fwd-out'), 'a-b');
  t.equal(networkOfChain('nw--fwd-in'), undefined);
  t.equal(networkOfChain('forward'), undefined);
  t.throws(() => parseNftState('{"nftables": 3}', 'tsnet'), { code: 'INTERNAL' });
  t.throws(() => parseNftState('not json', 'tsnet'), { code: 'INTERNAL' });
});

t.test('backend: list reads the kernel', async (t) => {
  const { exec, calls } = fakeExec(() => ({ stdout: LISTED, stderr: '' }));
  const fw = createNftablesFirewall({ netns: { kind: 'path', path: '/run/netns/x' }, exec });
  t.same(await fw.list(), { networks: ['host', 'net1', 'orphan'], endpoints: ['ep-1', 'other'] });
  t.same(calls[0]?.argv, ['nsenter', '--net=/run/netns/x', '--', 'nft', '-j', 'list', 'table', 'inet', 'tsnet'], 'runs in the bound namespace');
  const empty = fakeExec((argv) => nftFailure(argv, 'Error: No such file or directory\nlist table inet tsnet\n'));
  t.same(await createNftablesFirewall({ netns: { kind: 'host' }, exec: empty.exec }).list(), { networks: [], endpoints: [] }, 'no table: nothing owned');
});

t.test('backend: ensurePorts is one process on the fast path', async (t) => {
  const { exec, calls } = fakeExec(() => OK);
  const fw = createNftablesFirewall({ netns: { kind: 'host' }, exec });
  await fw.ensurePorts(SAMPLE_PORTS);
  t.equal(calls.length, 1, 'one nft process');
  t.same(calls[0]?.argv, ['nft', '-f', '-']);
  t.equal(calls[0]?.input, nftElementsScript('tsnet', 'create', planPorts(validateEndpointPorts(SAMPLE_PORTS)).flatMap(dnatAtoms)));
  await fw.ensurePorts({ ...SAMPLE_PORTS, mappings: [] });
  t.equal(calls.length, 1, 'nothing to publish: no process');
});

t.test('backend: ensurePorts creates the skeleton when the table is missing', async (t) => {
  const { exec, calls } = fakeExec((argv, _input, i) => (i === 0 ? nftFailure(argv, "Error: Could not process rule: No such file or directory") : OK));
  const fw = createNftablesFirewall({ netns: { kind: 'host' }, exec });
  await fw.ensurePorts(SAMPLE_PORTS);
  t.equal(calls.length, 2);
  t.match(calls[1]?.input ?? '', /^add table inet tsnet\n[\s\S]*add chain inet tsnet ports[\s\S]*create element inet tsnet ports4_any/, 'skeleton and elements in one transaction');
});

t.test('backend: ensurePorts slow path on an existing key', async (t) => {
  // ep-1 re-applies a subset plus one new mapping: only the new one is created
  const { exec, calls } = fakeExec((argv, _input, i) => {
    if (i === 0) return nftFailure(argv, 'Error: Could not process rule: File exists');
    if (argv.includes('list')) return { stdout: LISTED, stderr: '' };
    return OK;
  });
  const fw = createNftablesFirewall({ netns: { kind: 'host' }, exec });
  await fw.ensurePorts({ ...SAMPLE_PORTS, mappings: [m('tcp', [8080], [80], '10.88.0.2'), m('tcp', [8443], [443], '10.88.0.2')] });
  t.same(calls.map((c) => c.argv.slice(0, 3).join(' ')), ['nft -f -', 'nft -j list', 'nft -f -']);
  t.equal(calls[2]?.input, 'create element inet tsnet ports4_any { tcp . 8443 comment "ep-1" : 10.88.0.2 . 443 }\n');

  // another endpoint wants a published port: ALREADY_EXISTS, nothing applied after the read
  const other = fakeExec((argv, _input, i) => (i === 0 ? nftFailure(argv, 'Error: Could not process rule: File exists') : { stdout: LISTED, stderr: '' }));
  const fw2 = createNftablesFirewall({ netns: { kind: 'host' }, exec: other.exec });
  await t.rejects(fw2.ensurePorts({ ...SAMPLE_PORTS, endpointId: 'ep-2' as EndpointId, mappings: [m('tcp', [8050, 8060], [8050, 8060], '10.88.0.3')] }), {
    code: 'ALREADY_EXISTS',
    message: /ensure ports ep-2: port mapping tcp \*:8050-8060 .* conflicts with published tcp \*:8000-8100 -> 10\.88\.0\.2:8000-8100 \(endpoint ep-1\)/,
  });
  t.equal(other.calls.length, 2, 'read, then stop');

  // everything already present: success without a second apply
  const same = fakeExec((argv, _input, i) => (i === 0 ? nftFailure(argv, 'Error: Could not process rule: File exists') : { stdout: LISTED, stderr: '' }));
  await createNftablesFirewall({ netns: { kind: 'host' }, exec: same.exec }).ensurePorts(SAMPLE_PORTS);
  t.equal(same.calls.length, 2, 'idempotent re-apply');
});

t.test('backend: validation happens before any process', async (t) => {
  const { exec, calls } = fakeExec(() => OK);
  const fw = createNftablesFirewall({ netns: { kind: 'host' }, exec });
  await t.rejects(fw.ensurePorts({ ...SAMPLE_PORTS, mappings: [m('tcp', [0], [80], '10.88.0.2')] }), { code: 'INVALID_CONFIG', message: /mappings\[0\]\.hostPort\.start/ });
  await t.rejects(fw.ensurePorts({ ...SAMPLE_PORTS, mappings: [m('tcp', [80, 90], [80, 85], '10.88.0.2')] }), { code: 'INVALID_CONFIG', message: /mappings\[0\]\.containerPort/ });
  await t.rejects(fw.ensureNetwork({ ...(SAMPLE_NETWORKS['internal'] as NetworkPolicy), subnets: ['300.1.1.0/24' as Prefix] }), { code: 'INVALID_CONFIG', message: /subnets\[0\]/ });
  t.equal(calls.length, 0, 'nothing ran');
  t.throws(() => createNftablesFirewall({ netns: { kind: 'host' }, name: 'Bad-Name' }), { code: 'INVALID_CONFIG' });
});

t.test('backend: ensureNetwork reads the dispatch maps, refuses a taken bridge or subnet', async (t) => {
  const dispatchOnly = (argv: readonly string[]): RunResult => {
    const map = argv.at(-1) ?? '';
    const s = JSON.parse(LISTED) as { nftables: { map?: { name: string } }[] };
    return { stdout: JSON.stringify({ nftables: s.nftables.filter((x) => x.map?.name === map) }), stderr: '' };
  };
  const { exec, calls } = fakeExec((argv) => (argv.includes('list') ? dispatchOnly(argv) : OK));
  const fw = createNftablesFirewall({ netns: { kind: 'host' }, exec });
  await t.rejects(fw.ensureNetwork({ ...(SAMPLE_NETWORKS['internal'] as NetworkPolicy), bridge: 'tsbr0' as IfName }), { code: 'ALREADY_EXISTS', message: /bridge tsbr0 is used by network net1/ });
  await t.rejects(fw.ensureNetwork({ ...(SAMPLE_NETWORKS['dual-stack-masquerade'] as NetworkPolicy), networkId: 'n9' as NetworkId, bridge: 'br9' as IfName, subnets: ['10.88.0.128/25' as Prefix] }), { code: 'ALREADY_EXISTS', message: /subnet 10\.88\.0\.128\/25 overlaps 10\.88\.0\.0\/24 of network net1/ });
  t.notOk(calls.some((c) => c.argv.includes('-f')), 'no transaction was attempted');
  t.equal(calls.filter((c) => c.argv.includes('list')).length, 10, 'five small maps read per attempt');
  calls.length = 0;
  await fw.ensureNetwork({ ...(SAMPLE_NETWORKS['dual-stack-masquerade'] as NetworkPolicy), subnets: ['10.88.0.0/24' as Prefix] });
  const applied = calls.find((c) => c.argv.includes('-f'));
  t.match(applied?.input ?? '', /delete element inet tsnet nat_out6 \{ fd88::\/64 \}/, 're-apply removes what the network no longer has');
  t.notMatch(applied?.input ?? '', /delete element inet tsnet nat_out4/, 'and keeps what it still has');
});

t.test('backend: removals are idempotent and retried on a concurrent change', async (t) => {
  let lists = 0;
  const { exec, calls } = fakeExec((argv) => {
    if (argv.includes('list')) {
      lists++;
      return { stdout: LISTED, stderr: '' };
    }
    return lists === 1 ? nftFailure(argv, 'Error: Could not process rule: No such file or directory') : OK;
  });
  const fw = createNftablesFirewall({ netns: { kind: 'host' }, exec });
  await fw.removePorts('ep-1' as EndpointId);
  t.equal(lists, 2, 're-read after a concurrent removal');
  const del = calls.filter((c) => c.argv.includes('-f')).at(-1)?.input ?? '';
  t.match(del, /delete element inet tsnet ports4_any \{ tcp \. 6000, tcp \. 6001, tcp \. 6002, tcp \. 8080 \}/);
  t.notMatch(del, /9999|1234/, 'other owners untouched');
  calls.length = 0;
  await fw.removePorts('nobody' as EndpointId);
  t.same(calls.map((c) => c.argv.includes('-f')), [false], 'nothing owned: read only');

  const missing = fakeExec((argv) => nftFailure(argv, 'Error: No such file or directory'));
  const fw2 = createNftablesFirewall({ netns: { kind: 'host' }, exec: missing.exec });
  await fw2.removeNetwork('net1' as NetworkId);
  await fw2.removePorts('ep-1' as EndpointId);
  t.notOk(missing.calls.some((c) => c.argv.includes('-f')), 'no table: nothing to do, nothing created');
});

t.test('errors: nft messages become codes', async (t) => {
  t.equal(classifyNftError('Error: Could not process rule: File exists'), 'ALREADY_EXISTS');
  t.equal(classifyNftError('Error: Could not process rule: No such file or directory'), 'NOT_FOUND');
  t.equal(classifyNftError('Error: Could not process rule: Operation not permitted'), 'UNAVAILABLE');
  t.equal(classifyNftError('Error: Could not process rule: Protocol not supported'), 'UNAVAILABLE');
  t.equal(classifyNftError('Error: syntax error, unexpected string'), 'INTERNAL');
  const perm = fakeExec((argv) => nftFailure(argv, 'netlink: Error: cache initialization failed: Operation not permitted'));
  await t.rejects(createNftablesFirewall({ netns: { kind: 'host' }, exec: perm.exec }).removeAll(), { code: 'UNAVAILABLE', message: /^remove all: nft: / });
  const missing = fakeExec(() => new TsnetError('UNAVAILABLE', 'nft: not installed or not on PATH'));
  await t.rejects(createNftablesFirewall({ netns: { kind: 'host' }, exec: missing.exec }).ensurePorts(SAMPLE_PORTS), { code: 'UNAVAILABLE', message: /not installed/ });
  t.equal(missing.calls.length, 1, 'a missing binary is not retried');
});

t.test('removePorts by key: get script per map, and the owner check of what nft printed', async (t) => {
  const { atoms } = preparePorts({ endpointId: 'ep-1' as EndpointId, networkId: 'n1' as NetworkId, bridge: 'br0' as IfName, mappings: [m('tcp', [8080], [80], '10.0.0.2'), m('udp', [53], [53], '10.0.0.2')] });
  const script = nftGetElementsScript('tsnet', atoms, []);
  t.equal(script, nftDeleteElementsScript('tsnet', atoms).replaceAll('delete element', 'get element'), 'the delete script\'s keys, as gets');
  t.match(script, /^get element inet tsnet ports4_any \{ tcp \. 8080, udp \. 53 \}\n$/);
  const printed = 'table inet tsnet {\n\tmap ports4_any {\n\t\telements = { tcp . 8080 comment "ep-1" : 10.0.0.2 . 80,\n\t\t\t     udp . 53 comment "ep-1" : 10.0.0.2 . 53 }\n\t}\n}\n';
  t.ok(ownsAllElements(printed, 'ep-1', 2), 'both there, both the endpoint\'s');
  t.notOk(ownsAllElements(printed, 'ep-1', 3), 'fewer than asked: not all there');
  t.notOk(ownsAllElements(printed.replace('udp . 53 comment "ep-1"', 'udp . 53 comment "ep-2"'), 'ep-1', 2), 'one of another endpoint');
  t.notOk(ownsAllElements('', 'ep-1', 1), 'nothing printed');
});
