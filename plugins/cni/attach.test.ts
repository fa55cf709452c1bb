import t from 'tap';
import { TsnetError } from '../../core/errors.js';
import { nullLogger } from '../../core/log.js';
import type { Controller, CreateSandboxRequest } from '../../cnm/controller.js';
import type { EndpointRecord, NetworkRecord, SandboxRecord } from '../../cnm/model.js';
import type { CniDeps } from './deps.js';
import { CniError } from './errors.js';
import { attachedNetwork, attachmentSandboxId, createNetworkAttach, portRequestsOf } from './attach.js';
import type { Request } from './skel.js';

const req = (config: Record<string, unknown>, over: Partial<Request> = {}): Request => ({
  verb: 'ADD', containerId: 'c0ffee', ifName: 'eth0', netns: '/run/netns/p', args: new Map([['K8S_POD_NAME', 'web-1']]), path: [], cniVersion: '1.0.0',
  name: 'pods', config: { cniVersion: '1.0.0', name: 'pods', type: 'tsnet-bridge', tsnetNetwork: 'pods', ...config }, stdin: '', env: {}, ...over,
});

const NET = { id: 'n1', name: 'pods', driver: 'overlay', subnets: [{ subnet: '10.244.0.0/16', gateway: '10.244.0.1' }], config: { mtu: 1450 } } as unknown as NetworkRecord;

/** A controller that records what it is asked and keeps sandboxes in a map. */
function fakeController(): { ctl: Controller; asked: CreateSandboxRequest[]; deleted: string[] } {
  const sbs = new Map<string, SandboxRecord>();
  const asked: CreateSandboxRequest[] = [];
  const deleted: string[] = [];
  const ep = (id: string): EndpointRecord => ({ id: `${id}e`, networkId: 'n1', sandboxId: id, ifName: 'eth0', hostIf: 'vethabc', mac: '02:00:00:00:00:01', addresses: ['10.244.0.7/16'], defaultRoute: true, status: 'ready' }) as unknown as EndpointRecord;
  const ctl = {
    async findSandbox(id: string) {
      const sb = sbs.get(id);
      if (!sb) throw new TsnetError('NOT_FOUND', `no such sandbox ${id}`);
      return sb;
    },
    async createSandbox(r: CreateSandboxRequest) {
      asked.push(r);
      const record = { id: r.id, name: r.name, status: 'ready', netns: { kind: 'external', path: r.netnsPath }, dnsSearch: [], cni: r.cni } as unknown as SandboxRecord;
      sbs.set(r.id as string, record);
      return { record, netns: { kind: 'path', path: r.netnsPath } };
    },
    async endpointsOf(id: string) {
      return sbs.has(id) ? [ep(id)] : [];
    },
    async findNetwork() {
      return NET;
    },
    async deleteSandbox(id: string) {
      deleted.push(id);
      if (!sbs.delete(id)) throw new TsnetError('NOT_FOUND', 'gone');
      return [];
    },
    async listSandboxes() {
      return [...sbs.values()];
    },
  } as unknown as Controller;
  return { ctl, asked, deleted };
}

const depsWith = (controller?: Controller): CniDeps => ({
  log: nullLogger, isNetns: async () => true, ...(controller ? { controller: async () => controller } : {}),
}) as unknown as CniDeps;

t.test('tsnetNetwork: parsing', async (t) => {
  t.equal(attachedNetwork({}), undefined, 'absent: the bridge plugin\'s own network');
  t.equal(attachedNetwork({ tsnetNetwork: 'pods' }), 'pods');
  t.throws(() => attachedNetwork({ tsnetNetwork: 3 }), /tsnetNetwork: must be the name/);
  t.throws(() => attachedNetwork({ tsnetNetwork: 'no/slash' }), /tsnetNetwork: invalid name/);
  const id = attachmentSandboxId('pods', 'c1', 'eth0');
  t.match(id, /^[0-9a-f]{64}$/);
  t.equal(id, attachmentSandboxId('pods', 'c1', 'eth0'), 'deterministic: DEL finds it without a cache');
  t.not(id, attachmentSandboxId('pods', 'c1', 'eth1'));
  t.not(id, attachmentSandboxId('pods2', 'c1', 'eth0'));
  t.same(portRequestsOf({ runtimeConfig: { portMappings: [{ HostPort: 8080, ContainerPort: 80, Protocol: 'tcp', HostIP: '' }] } }), [
    { proto: 'tcp', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } },
  ], 'go-cni\'s field names; an empty HostIP is every address');
  t.same(portRequestsOf({ runtimeConfig: { portMappings: [{ hostPort: 53, containerPort: 53, protocol: 'udp', hostIP: '0.0.0.0' }] } })[0]?.hostIp, '0.0.0.0',
    '0.0.0.0 is kept: the port picker takes it as every IPv4 address (IPv4 only, as tsnet-bridge\'s own networks do)');
});

t.test('tsnetNetwork: ADD, ADD again, DEL, DEL again, GC', async (t) => {
  const { ctl, asked, deleted } = fakeController();
  const a = createNetworkAttach(depsWith(ctl));
  const r = await a.add(req({ runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80 }], ips: ['10.244.0.7/16'] } }));
  t.equal(asked.length, 1);
  const ask = asked[0] as CreateSandboxRequest;
  t.equal(ask.netnsPath, '/run/netns/p', 'the runtime\'s namespace is joined');
  t.same(ask.mode, { kind: 'network', network: 'pods' });
  t.equal(ask.connect?.ifName, 'eth0', 'CNI_IFNAME');
  t.equal(ask.connect?.ip, '10.244.0.7', 'the ips capability');
  t.same(ask.connect?.aliases, ['web-1'], 'the pod name resolves');
  t.equal(ask.hostname, 'web-1');
  t.equal(ask.connect?.ports?.length, 1);
  t.same(ask.cni, { network: 'pods', containerId: 'c0ffee', ifName: 'eth0' });
  t.same(r.ips, [{ address: '10.244.0.7/16', gateway: '10.244.0.1', interface: 1 }]);
  t.same(r.interfaces?.[1], { name: 'eth0', mac: '02:00:00:00:00:01', sandbox: '/run/netns/p', mtu: 1450 });
  t.same(r.routes, [{ dst: '0.0.0.0/0', gw: '10.244.0.1' }]);
  t.same(r.dns, { nameservers: ['10.244.0.1'] }, 'the embedded resolver on the gateway');
  const again = await a.add(req({}));
  t.same(again.ips, r.ips, 'ADD again: the same attachment');
  t.equal(asked.length, 1, 'nothing made twice');
  await a.del(req({}, { verb: 'DEL' }));
  await t.resolves(a.del(req({}, { verb: 'DEL' })), 'DEL again succeeds');
  t.equal(deleted.length, 2);
  await a.add(req({}, { containerId: 'keep' }));
  await a.add(req({}, { containerId: 'stale' }));
  await a.gc(req({}, { verb: 'GC' }), [{ containerId: 'keep', ifName: 'eth0' }]);
  t.same(deleted.slice(2), [attachmentSandboxId('pods', 'stale', 'eth0')], 'GC removes only what the runtime no longer lists');
});

t.test('tsnetNetwork: refused input and no daemon', async (t) => {
  const { ctl, asked } = fakeController();
  const a = createNetworkAttach(depsWith(ctl));
  await t.rejects(a.add(req({ ipam: { type: 'host-local' } })), /ipam: not used with tsnetNetwork/);
  await t.rejects(a.add(req({ runtimeConfig: { ips: ['10.244.0.7', '10.244.0.8'] } })), /at most one address per family/);
  await t.rejects(a.add(req({ runtimeConfig: { portMappings: [{ hostPort: 0, containerPort: 80 }] } })), /portMappings\[0\]\.hostPort/);
  t.equal(asked.length, 0, 'nothing asked of the controller for refused input');
  const none = createNetworkAttach(depsWith());
  const err = await none.add(req({})).catch((e: unknown) => e);
  t.ok(err instanceof CniError && err.code === 11, 'without the node daemon: CNI error 11, try again later');
  t.match((err as Error).message, /tsnet daemon/);
  const notNs = createNetworkAttach({ ...depsWith(ctl), isNetns: async () => false } as CniDeps);
  await t.rejects(notNs.add(req({})), /CNI_NETNS: \/run\/netns\/p is not a network namespace/);
});
