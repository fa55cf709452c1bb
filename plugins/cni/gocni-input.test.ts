/**
 * The plugins fed what containerd's go-cni sends for a Kubernetes pod (capability objects with Go
 * field names), over fakes: the parsers, then tsnet-bridge and tsnet-portmap ADD, CHECK and DEL.
 * The same input against the real kernel and the real go-cni: test/e2e/cni-gocni.priv.test.ts.
 */
import t from 'tap';
import { nullLogger } from '../../core/log.js';
import type { IfName, NetnsRef } from '../../core/net.js';
import { createFakeFirewall } from '../../sys/firewall/fake.js';
import { createFakeNetlink } from '../../sys/netlink/fake.js';
import { fakeTc, type FakeTc } from '../../test/helpers/fake-tc.js';
import type { CniDnsRegistry } from '../../sys/store/api.js';
import { memoryHostLocal, type MemoryHostLocal } from '../../test/helpers/host-local-memory.js';
import { createBridgePlugin, parseBandwidth, parseBridgeConf, parseDnsCapability } from './bridge.js';
import type { CniDeps } from './deps.js';
import { parseAliases, parseDnsConf } from './dns.js';
import { parseIpamConfig, requestedIps } from './ipam.js';
import { mayHavePortMappings, parsePortMappings } from './names.js';
import { createPortmapPlugin } from './portmap.js';
import { parseConfig, parseValidAttachments, type Request } from './skel.js';
import { fromWire, type Result } from './spec.js';

/** What go-cni 1.1 puts in runtimeConfig for a pod with a hostPort, bandwidth annotations and a DNS config (its structs have no json tags). */
const GOCNI_RUNTIME_CONFIG = {
  portMappings: [{ HostPort: 8080, ContainerPort: 80, Protocol: 'tcp', HostIP: '' }],
  bandwidth: { IngressRate: 1_000_000, IngressBurst: 4_294_967_295, EgressRate: 2_000_000, EgressBurst: 4_294_967_295 },
  dns: { Servers: ['10.96.0.10'], Searches: ['default.svc.cluster.local', 'svc.cluster.local'], Options: ['ndots:5'] },
};

t.test('parsers read go-cni\'s capability objects', async (t) => {
  const cfg = { runtimeConfig: GOCNI_RUNTIME_CONFIG };
  t.same(parsePortMappings(cfg), [{ hostPort: 8080, containerPort: 80, protocol: 'tcp', hostIp: undefined }], 'portMappings: HostPort, ContainerPort, Protocol, HostIP');
  t.same(parsePortMappings({ runtimeConfig: { portMappings: [{ HostPort: 53, ContainerPort: 53, Protocol: 'UDP', HostIP: '127.0.0.1' }] } }), [{ hostPort: 53, containerPort: 53, protocol: 'udp', hostIp: '127.0.0.1' }], 'HostIP and an upper-case protocol');
  t.same(parseBandwidth(cfg), { ingressRate: 1_000_000, ingressBurst: 4_294_967_295, egressRate: 2_000_000, egressBurst: 4_294_967_295 }, 'bandwidth: IngressRate...');
  t.same(parseDnsCapability(cfg), { nameservers: ['10.96.0.10'], search: ['default.svc.cluster.local', 'svc.cluster.local'], options: ['ndots:5'] }, 'dns: Servers, Searches, Options');
  t.same(parseDnsCapability({ runtimeConfig: { dns: { servers: ['1.1.1.1'] } } }), { nameservers: ['1.1.1.1'] }, 'dns: the conventions\' spelling');
  t.equal(parseDnsCapability({ runtimeConfig: { dns: { Servers: null, Searches: [] } } }), undefined, 'null and empty lists add nothing');
  t.throws(() => parseDnsCapability({ runtimeConfig: { dns: { Servers: '10.0.0.1' } } }), /runtimeConfig\.dns\.servers: must be a list of strings/, 'a bad dns capability names the field');
  t.throws(() => parseDnsCapability({ runtimeConfig: { dns: [] } }), /runtimeConfig\.dns: must be an object/);
  t.same(requestedIps({ runtimeConfig: { IPs: ['10.1.0.9/24'] } }, new Map()), ['10.1.0.9'], 'ips');
  t.same(parseAliases({ RuntimeConfig: { Aliases: { lab: ['web'], Lab: ['not this network'] } } }, 'lab'), ['web'], 'aliases: the field by any case, the network names exactly (a Go map)');
  t.equal(parseDnsConf({ Capabilities: { aliases: true }, IsGateway: true }, 'lab', true).enabled, true, 'capabilities by any case');
  const b = parseBridgeConf({ Bridge: 'kube0', IsGateway: true, IPMasq: true, HairpinMode: true, MTU: 1450, IPAM: { Type: 'tsnet-ipam', Ranges: [[{ Subnet: '10.1.0.0/24', Gateway: '10.1.0.254' }]], DataDir: '/x' } });
  t.same([b.bridge, b.isGateway, b.ipMasq, b.hairpin, b.mtu, b.ipamType, b.ipam?.ranges[0]?.[0]?.gateway, b.ipam?.dataDir], ['kube0', true, true, true, 1450, 'tsnet-ipam', '10.1.0.254', '/x'], 'bridge and IPAM configuration keys by any case');
  t.same(parseIpamConfig({ Subnet: '10.2.0.0/24', RangeStart: '10.2.0.10', Routes: [{ Dst: '0.0.0.0/0' }] }).routes, [{ dst: '0.0.0.0/0' }], 'legacy single-range form and routes');
  t.same(fromWire({ CNIVersion: '1.0.0', Interfaces: [{ Name: 'eth0', Sandbox: '/ns' }], IPs: [{ Address: '10.1.0.2/24', Interface: 0 }] }), { interfaces: [{ name: 'eth0', sandbox: '/ns' }], ips: [{ address: '10.1.0.2/24', interface: 0 }] }, 'a prevResult by any case');
  t.same(parseValidAttachments({ 'cni.dev/valid-attachments': [{ ContainerID: 'c1', IfName: 'eth0' }] }), [{ containerId: 'c1', ifName: 'eth0' }], 'GC attachments');
  t.same(parseConfig('{"CNIVersion":"1.0.0","Name":"n"}', 'ADD').cniVersion, '1.0.0', 'cniVersion and name by any case');
  t.equal(parsePortMappings({ runtimeConfig: { portMappings: [{ hostPort: 80, HostPort: 8080, containerPort: 80 }] } })[0]?.hostPort, 8080, 'a key given twice: the later wins, as in Go');
  t.throws(() => parsePortMappings({ runtimeConfig: { portMappings: [{ ContainerPort: 80 }] } }), /portMappings\[0\]\.hostPort/, 'a missing host port is still an error on ADD');
  t.equal(mayHavePortMappings({ runtimeConfig: { portMappings: 'garbage' } }), true, 'DEL: any non-empty shape may have left ports');
  t.equal(mayHavePortMappings({ runtimeConfig: { portMappings: [] } }), false);
  t.equal(mayHavePortMappings({}), false);
});

interface World {
  readonly deps: CniDeps;
  readonly fw: ReturnType<typeof createFakeFirewall>;
  readonly shaped: FakeTc['shaped'];
  readonly sandbox: NetnsRef;
  readonly reservations: MemoryHostLocal;
}

function world(): World {
  const nl = createFakeNetlink();
  const fw = createFakeFirewall();
  const sandbox = nl.addNetns('/run/netns/pod1');
  const { tcFor: tc, shaped } = fakeTc();
  const reservations = memoryHostLocal();
  const store = reservations;
  const dnsRegistry = (): CniDnsRegistry => ({ put: async () => undefined, remove: async () => false, ids: async () => [], removeStaleTemps: async () => [], reload: async () => false });
  let seq = 0;
  const deps: CniDeps = {
    hostNs: { kind: 'host' },
    netlink: nl.netlinkFor,
    sysctl: nl.sysctlFor,
    tc,
    firewall: () => fw,
    log: nullLogger,
    randomHex: (n) => (++seq).toString(16).padStart(2 * n, '0').slice(-2 * n),
    openIpamStore: async () => store,
    withLock: (_name, fn) => fn(),
    isNetns: async (path) => nl.hasNetns({ kind: 'path', path }),
    isAlive: () => true,
    execPlugin: async () => {
      throw new Error('no delegation in this test');
    },
    dnsRegistry,
  };
  return { deps, fw, shaped, sandbox, reservations };
}

const BRIDGE_CONF = {
  cniVersion: '1.0.0', name: 'k8s', type: 'tsnet-bridge', bridge: 'kube0', isGateway: true, isDefaultGateway: true, ipMasq: true,
  capabilities: { portMappings: true, bandwidth: true, dns: true },
  ipam: { type: 'tsnet-ipam', ranges: [[{ subnet: '10.1.0.0/24' }]] },
};

function request(verb: Request['verb'], config: Record<string, unknown>, netns: string | undefined): Request {
  return {
    verb, containerId: 'pod1', ifName: 'eth0', netns, path: [], cniVersion: '1.0.0', name: 'k8s', config, stdin: JSON.stringify(config), env: {},
    args: new Map([['K8S_POD_NAMESPACE', 'default'], ['K8S_POD_NAME', 'web'], ['K8S_POD_INFRA_CONTAINER_ID', 'pod1'], ['IgnoreUnknown', '1']]),
  };
}

t.test('tsnet-bridge with go-cni\'s capabilities: ports, bandwidth and dns take effect; CHECK; DEL', async (t) => {
  const w = world();
  const netns = w.sandbox.kind === 'path' ? w.sandbox.path : '';
  const cfg = { ...BRIDGE_CONF, runtimeConfig: GOCNI_RUNTIME_CONFIG };
  const plugin = createBridgePlugin(w.deps);
  const r: Result = await plugin.add(request('ADD', cfg, netns));
  t.match(r.ips?.[0]?.address, /^10\.1\.0\.\d+\/24$/, 'an address');
  const ports = [...w.fw.ports().values()].flat();
  t.equal(ports.length, 1, 'one DNAT rule');
  t.match(ports[0], { hostPorts: { start: 8080, end: 8080 }, toPorts: { start: 80, end: 80 }, proto: 'tcp', to: r.ips?.[0]?.address.split('/')[0] }, 'HostPort 8080 -> the pod\'s ContainerPort 80');
  const hostIf = r.interfaces?.find((i) => i.sandbox === undefined && i.name.startsWith('veth'))?.name;
  t.same(w.shaped, [
    { ns: 'host', dev: hostIf, shape: { rate: 1_000_000, burst: 4_294_967_295 } },
    { ns: netns, dev: 'eth0', shape: { rate: 2_000_000, burst: 4_294_967_295 } },
  ], 'IngressRate on the host end, EgressRate on the container end');
  t.same(r.dns, { nameservers: ['10.96.0.10'], search: ['default.svc.cluster.local', 'svc.cluster.local'], options: ['ndots:5'] }, 'the dns capability in the result');

  await plugin.check({ ...request('CHECK', { ...cfg, prevResult: r }, netns) });
  t.pass('CHECK passes with the same go-cni input');

  const before = w.fw.calls.filter((c) => c.op === 'removePorts').length;
  await plugin.del(request('DEL', { ...cfg, prevResult: r }, netns));
  const removes = w.fw.calls.filter((c) => c.op === 'removePorts');
  t.equal(removes.length, before + 1, 'DEL removed the published ports');
  t.match(removes.at(-1)?.published?.mappings, [{ proto: 'tcp', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } }], 'by what the endpoint\'s record says it published (removed by key, no search)');
  t.equal(w.fw.ports().size, 0, 'no DNAT rule left');
  t.equal((await w.reservations.list()).length, 0, 'address released');
  t.notOk((await w.deps.netlink({ kind: 'host' }).getLink(hostIf as IfName)), 'host veth gone');
  await plugin.del(request('DEL', { ...cfg, prevResult: r }, netns));
  t.pass('DEL again succeeds');
});

t.test('DEL of a pod with a hostPort never fails on the shape of its input', async (t) => {
  const shapes: [string, unknown][] = [
    ['go-cni', GOCNI_RUNTIME_CONFIG.portMappings],
    ['a list of non-objects', ['8080:80']],
    ['not a list', { HostPort: 8080 }],
    ['fields of the wrong type', [{ HostPort: 'eighty', ContainerPort: -1, Protocol: 7, HostIP: 'nowhere' }]],
    ['fields missing', [{}]],
  ];
  for (const [label, portMappings] of shapes) {
    const w = world();
    const netns = w.sandbox.kind === 'path' ? w.sandbox.path : '';
    const added = await createBridgePlugin(w.deps).add(request('ADD', { ...BRIDGE_CONF, runtimeConfig: GOCNI_RUNTIME_CONFIG }, netns));
    t.equal(w.fw.ports().size, 1, `${label}: ADD published the port`);
    const broken = { ...BRIDGE_CONF, runtimeConfig: { ...GOCNI_RUNTIME_CONFIG, portMappings, bandwidth: 'x', dns: 5 } };
    await createBridgePlugin(w.deps).del(request('DEL', { ...broken, prevResult: added }, netns));
    t.equal(w.fw.ports().size, 0, `${label}: tsnet-bridge DEL succeeded and removed the port`);
    t.equal((await w.reservations.list()).length, 0, `${label}: and released the address`);
    // tsnet-portmap after any interface plugin: the same
    const pm = { cniVersion: '1.0.0', name: 'k8s', type: 'tsnet-portmap', capabilities: { portMappings: true } };
    const prev = { interfaces: [{ name: 'kube0' }, { name: 'eth0', sandbox: netns }], ips: [{ address: '10.1.0.7/24', interface: 1 }] };
    const portmap = createPortmapPlugin(w.deps);
    await portmap.add(request('ADD', { ...pm, runtimeConfig: { portMappings: GOCNI_RUNTIME_CONFIG.portMappings }, prevResult: prev }, netns));
    t.equal(w.fw.ports().size, 1, `${label}: tsnet-portmap ADD published the port`);
    await portmap.del(request('DEL', { ...pm, runtimeConfig: { portMappings }, prevResult: prev }, undefined));
    t.equal(w.fw.ports().size, 0, `${label}: tsnet-portmap DEL succeeded and removed it`);
  }
});
