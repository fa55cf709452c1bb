import t from 'tap';
import type { IpAddr, NetworkId, Prefix } from '../core/net.js';
import { buildSnapshot, lookupName, visibleNetworks } from '../dns/records.js';
import type { CniAttachmentRecord } from '../sys/store/api.js';
import { dnsInputs } from './dns.js';
import type { NetworkRecord } from './model.js';

const att = (network: string, containerId: string, address: string, names: string[], gateways = [`${address.split('.').slice(0, 3).join('.')}.1`]): CniAttachmentRecord => ({
  networkId: `cni-${network}`, network, gateways: gateways as IpAddr[], subnets: [`${address.split('.').slice(0, 3).join('.')}.0/24`] as Prefix[], containerId, ifName: 'eth0', addresses: [address as IpAddr], names,
});

t.test('CNI attachment records become DNS networks and endpoints', async (t) => {
  const cni = [
    att('lab', 'web', '10.77.0.2', ['webctr', 'web']),
    att('lab', 'client', '10.77.0.3', ['client']),
    att('other', 'stranger', '10.78.0.2', ['stranger']),
    att('lab', 'odd', '10.77.0.4', ['odd'], ['10.77.0.1', '10.77.0.254']),
  ];
  const inputs = dnsInputs([], [], [], cni);
  t.same(inputs.networks, [
    { id: 'cni-lab', name: 'lab', internal: false, subnets: ['10.77.0.0/24'], gateways: ['10.77.0.1', '10.77.0.254'] },
    { id: 'cni-other', name: 'other', internal: false, subnets: ['10.78.0.0/24'], gateways: ['10.78.0.1'] },
  ], 'one network per CNI network, gateways and subnets merged over its records, not internal');
  t.same(inputs.endpoints.map((e) => [e.networkId, e.sandboxId, e.names]), [
    ['cni-lab', 'cni:web', ['webctr', 'web']], ['cni-lab', 'cni:client', ['client']], ['cni-other', 'cni:stranger', ['stranger']], ['cni-lab', 'cni:odd', ['odd']],
  ]);
  const snap = buildSnapshot(1, inputs.networks, inputs.endpoints);
  const client = visibleNetworks(snap, 'cni-lab', '10.77.0.3' as IpAddr);
  t.same(lookupName(client ?? [], 'web'), ['10.77.0.2'], 'a neighbour on lab resolves web');
  t.equal(lookupName(client ?? [], 'stranger'), undefined, 'but not a container of another network');
  const stranger = visibleNetworks(snap, 'cni-other', '10.78.0.2' as IpAddr);
  t.equal(lookupName(stranger ?? [], 'web'), undefined, 'and the other way round');
  t.equal(visibleNetworks(snap, 'cni-lab', '10.77.0.99' as IpAddr), undefined, 'a source that is no attachment is nobody');
});

t.test('a CNI record never merges into a CNM network of the same id', async (t) => {
  const net = { schemaVersion: 1, id: 'cni-lab' as NetworkId, name: 'cni-lab', driver: 'bridge', created: '', status: 'ready', internal: true, ipv6: false, predefined: false, subnets: [{ subnet: '10.9.0.0/24' as Prefix, gateway: '10.9.0.1' as IpAddr }], options: {}, labels: {}, config: {} } satisfies NetworkRecord;
  const inputs = dnsInputs([net], [], [], [att('lab', 'web', '10.77.0.2', ['web'])]);
  t.same(inputs.networks.map((n) => [n.id, n.internal, n.gateways]), [['cni-lab', true, ['10.9.0.1']]], 'the CNM network stays as it is');
  t.same(inputs.endpoints, [], 'and the CNI record is ignored');
});
