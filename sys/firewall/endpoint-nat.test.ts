import t from 'tap';
import type { EndpointId, IfName, NetworkId, Prefix } from '../../core/net.js';
import type { Argv, RunOptions, RunResult } from '../exec.js';
import type { EndpointPorts } from './api.js';
import { sampleMapping as m } from './fake.js';
import { endpointNatToIpt, iptNames, renderRestore, lineOf } from './iptables.js';
import { createNftablesFirewall, nftNatElementsScript, parseNftState } from './nftables.js';
import { planEndpointNat, preparePorts } from './plan.js';
import { goldenIn } from '../../test/helpers/golden.js';

const golden = goldenIn('firewall');

/** tsnet-portmap after the reference bridge: cni0 is no tsnet network. */
const FOREIGN: EndpointPorts = {
  endpointId: 'cni-ep' as EndpointId,
  networkId: 'cni-net' as NetworkId,
  bridge: 'cni0' as IfName,
  mappings: [m('tcp', [8080], [80], '10.22.0.5'), m('udp', [8080], [80], '10.22.0.5'), m('tcp', [8080], [80], 'fd22::5')],
  foreignBridge: { subnets: ['10.22.0.0/16' as Prefix, 'fd22::/64' as Prefix] },
};

t.test('endpoint masquerades on a foreign bridge: plan, nft and iptables (golden)', async (t) => {
  const nat = planEndpointNat(FOREIGN);
  await golden(t, 'plan-endpoint-nat.json', `${JSON.stringify(nat, null, 2)}\n`);
  t.same(nat.map((r) => `${r.from} -> ${r.to}`), ['127.0.0.0/8 -> 10.22.0.5', '10.22.0.0/16 -> 10.22.0.5', 'fd22::/64 -> fd22::5'], 'loopback (IPv4 only) and hairpin from its subnet, per container address');
  t.same(planEndpointNat({ ...FOREIGN, foreignBridge: undefined } as unknown as EndpointPorts), [], 'a tsnet network\'s endpoint owns none (the network does)');
  await golden(t, 'nft-endpoint-nat.nft', nftNatElementsScript('tsnet', nat, 'add') + nftNatElementsScript('tsnet', nat, 'delete'));
  await golden(t, 'iptables-endpoint-nat.rules', renderRestore(nat.filter((r) => r.family === 4).map((r) => lineOf('-A', endpointNatToIpt(iptNames('tsnet'), r)))));
  t.same(preparePorts(FOREIGN).nat, nat, 'preparePorts plans them with the mappings');
  t.throws(() => preparePorts({ ...FOREIGN, foreignBridge: { subnets: ['10.22.0.0/33' as Prefix] } }), { code: 'INVALID_CONFIG', message: /^foreignBridge\.subnets\[0\]/ }, 'a bad subnet names its field');
});

t.test('nftables: the elements go with the ports in one transaction and are read back by owner', async (t) => {
  const calls: { argv: readonly string[]; input?: string }[] = [];
  const exec = async (argv: Argv, opts: RunOptions): Promise<RunResult> => {
    if (argv[0] === 'dbus-send') throw new Error('org.freedesktop.DBus.Error.ServiceUnknown'); // no firewalld, even where a system bus runs
    calls.push({ argv, ...(opts.input === undefined ? {} : { input: String(opts.input) }) });
    return { stdout: '', stderr: '' };
  };
  await createNftablesFirewall({ netns: { kind: 'host' }, exec }).ensurePorts(FOREIGN);
  t.equal(calls.length, 1, 'one nft process');
  t.match(calls[0]?.input ?? '', /create element inet tsnet ports4_any .*\nadd element inet tsnet masq4 \{ 127\.0\.0\.0\/8 \. 10\.22\.0\.5 comment "cni-ep", 10\.22\.0\.0\/16 \. 10\.22\.0\.5 comment "cni-ep" \}\nadd element inet tsnet masq6/s);
  const listed = JSON.stringify({ nftables: [{ set: { family: 'inet', name: 'masq4', table: 'tsnet', type: ['ipv4_addr', 'ipv4_addr'], flags: ['interval'], elem: [{ elem: { val: { concat: [{ prefix: { addr: '127.0.0.0', len: 8 } }, '10.22.0.5'] }, comment: 'cni-ep' } }, { elem: { val: { concat: ['10.9.9.9', '10.22.0.5'] } } }] } }] });
  t.same(parseNftState(listed, 'tsnet').nat, [{ kind: 'masquerade-endpoint', owner: 'cni-ep', family: 4, from: '127.0.0.0/8', to: '10.22.0.5' }], 'owned elements only');
});
