/**
 * The lab file: every field, valid and invalid; errors name the path at fault; the JSON Schema in
 * the repository is the one the zod schema gives.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { TsnetError } from '../core/errors.js';
import { labJsonSchemaText } from './schema.js';
import { parseLab, pathText } from './spec.js';
import { formatImpairment, parseDuration, parsePercent, parseRate } from './units.js';

const BASE = `name: lab1
networks:
  lan: { subnet: 10.50.0.0/24 }
nodes:
  r1: { networks: [lan] }
  r2: {}
`;
const withNodes = (nodes: string, links = '', extra = ''): string => `name: lab1\nnetworks:\n  lan: { subnet: 10.50.0.0/24 }\n  lan6: { ipv6: true }\n${extra}nodes:\n${nodes}${links !== '' ? `links:\n${links}` : ''}`;

/** The error's message and field, for a file that must be refused. */
function refused(t: Tap.Test, text: string, path: string, re: RegExp, msg: string): void {
  try {
    parseLab(text, 'lab.yaml');
    t.fail(`${msg}: accepted`);
  } catch (err) {
    t.ok(err instanceof TsnetError && err.code === 'INVALID_CONFIG', `${msg}: INVALID_CONFIG`);
    const m = (err as Error).message;
    t.ok(m.includes(`${path}: `), `${msg}: names ${path} (${m})`);
    t.match(m, re, `${msg}: says why`);
  }
}

t.test('the issue\'s example file: every field', async (t) => {
  const spec = parseLab(`name: lab1
networks:
  lan: { subnet: 10.50.0.0/24 }
defaults: { cmd: "sleep infinity" }
nodes:
  r1: { networks: [lan], sysctls: { net.ipv4.ip_forward: 1 }, exec: ["ip route add 10.9.0.0/16 via 10.0.12.2"] }
  r2: { networks: [lan], cmd: "python3 -m http.server 80", env: { A: "1" }, ports: ["8080:80"] }
  r3: {}
links:
  - endpoints: ["r1:eth1", "r2:eth1"]
  - endpoints:
      - { node: r1, interface: eth2, ipv4: 10.0.13.1/30, ipv6: "fd00:13::1/64", mac: "02:00:00:00:13:01" }
      - { node: r3, interface: eth1, ipv4: 10.0.13.2/30 }
    mtu: 9000
    impair: { rate: 10mbit, delay: 20ms, jitter: 2ms, loss: 1% }
`);
  t.equal(spec.name, 'lab1');
  t.same(spec.networks.map((n) => [n.key, n.name, n.request.subnets]), [['lan', 'lab1-lan', [{ subnet: '10.50.0.0/24' }]]]);
  const [r1, r2, r3] = spec.nodes;
  t.same(r1?.argv, ['sleep', 'infinity'], 'defaults.cmd, split');
  t.same(r1?.sysctls, { 'net.ipv4.ip_forward': '1' });
  t.same(r1?.exec.map((e) => [e.argv, e.path]), [[['ip', 'route', 'add', '10.9.0.0/16', 'via', '10.0.12.2'], 'nodes.r1.exec[0]']]);
  t.same(r1?.networks.map((a) => [a.network, a.aliases]), [['lan', ['r1']]], 'the node name resolves on its networks');
  t.match(r1?.networks[0]?.mac, /^02(:[0-9a-f]{2}){5}$/, 'a MAC derived from lab, node and network');
  t.equal(parseLab(`name: lab1\nnetworks: { lan: {} }\nnodes: { r1: { networks: [lan], env: { X: "2" } } }\n`).nodes[0]?.networks[0]?.mac, r1?.networks[0]?.mac, 'the same MAC when the node is re-made');
  t.not(r2?.networks[0]?.mac, r1?.networks[0]?.mac, 'another node, another MAC');
  t.equal(r1?.container, 'lab1-r1');
  t.same(r2?.argv, ['python3', '-m', 'http.server', '80']);
  t.same(r2?.env, { A: '1' });
  t.same(r2?.ports.map((p) => [p.hostPort?.start, p.containerPort.start, p.proto]), [[8080, 80, 'tcp']]);
  t.same(r3?.networks, []);
  t.equal(spec.links.length, 2);
  const [l0, l1] = spec.links;
  t.same(l0?.ends.map((e) => [e.node, e.ifName, e.addresses]), [['r1', 'eth1', []], ['r2', 'eth1', []]]);
  t.same(l1?.ends[0], { node: 'r1', kind: 'linux', ifName: 'eth2', addresses: ['10.0.13.1/30', 'fd00:13::1/64'], mac: '02:00:00:00:13:01' });
  t.equal(l1?.mtu, 9000);
  t.same(l1?.impair, { rate: 10_000_000, delayUs: 20_000, jitterUs: 2000, lossPct: 1 });
  t.same(spec.netemFields, ['links[1].impair.delay', 'links[1].impair.jitter', 'links[1].impair.loss']);
  t.not(l0?.id, l1?.id, 'links have distinct stable ids');
  t.not(l0?.ends[0].mac, l0?.ends[1].mac, 'each link end its own MAC');
  t.equal(parseLab(`name: lab1\nnodes: { r1: {}, r2: {} }\nlinks: [ { endpoints: ["r1:eth1", "r2:eth1"] } ]\n`).links[0]?.id,
    parseLab(`name: lab1\nnodes: { r1: {}, r2: {} }\nlinks: [ { endpoints: ["r1:eth1", "r2:eth1"], mtu: 1400 } ]\n`).links[0]?.id, 'the id depends on the endpoints only');
});

t.test('hashes change with what cannot change in place, not with impairments', async (t) => {
  const a = parseLab(withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: ["r1:eth1", "r2:eth1"]\n    impair: { rate: 1mbit }\n'));
  const b = parseLab(withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: ["r1:eth1", "r2:eth1"]\n    impair: { rate: 2mbit }\n'));
  const c = parseLab(withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: ["r1:eth1", "r2:eth1"]\n    mtu: 1400\n'));
  t.equal(a.links[0]?.hash, b.links[0]?.hash);
  t.not(a.links[0]?.hash, c.links[0]?.hash);
  const d = parseLab(withNodes('  r1: { env: { X: 1 } }\n  r2: {}\n'));
  t.not(a.nodes[0]?.hash, d.nodes[0]?.hash);
  t.equal(a.nodes[1]?.hash, d.nodes[1]?.hash);
});

t.test('all node fields, defaults and bridge nodes', async (t) => {
  const spec = parseLab(withNodes(`  r1:
    networks: [lan, { network: lan6, ipv4: 10.0.0.9, ipv6: "fd00::9", mac: "02:00:00:00:00:09", aliases: [router] }]
    cmd: [/bin/sh, -c, "echo hi && sleep 1"]
    hostname: router-one
    rootfs: /srv/root
    workdir: /tmp
    labels: { team: a }
    sysctls: { net.ipv6.conf.all.forwarding: 1 }
  r_2: {}
  sw: { kind: bridge, bridge: br-lab, mtu: 1500 }
  s2: { kind: bridge }
`, '  - endpoints: ["r1:eth2", "sw:p1"]\n  - endpoints: ["sw:p2", "s2:p1"]\n', 'defaults: { env: { D: "x", N: 1 }, exec: ["true"], workdir: /srv }\n'));
  const r1 = spec.nodes[0];
  t.same(r1?.argv, ['/bin/sh', '-c', 'echo hi && sleep 1'], 'argv lists are taken as they are');
  t.same(r1?.networks[1], { network: 'lan6', aliases: ['r1', 'router'], ip: '10.0.0.9', ip6: 'fd00::9', mac: '02:00:00:00:00:09' }, 'a MAC given is taken');
  t.equal(r1?.hostname, 'router-one');
  t.equal(r1?.rootfs, '/srv/root');
  t.equal(r1?.workdir, '/tmp', 'a node\'s field wins over defaults');
  t.same(r1?.env, { D: 'x', N: '1' });
  t.same(r1?.labels, { team: 'a' });
  t.same(r1?.exec.map((e) => e.path), ['defaults.exec[0]']);
  t.equal(spec.nodes[1]?.hostname, 'r-2', 'underscores are no host name characters');
  t.same(spec.switches.map((s) => [s.key, s.bridge, s.mtu]), [['sw', 'br-lab', 1500], ['s2', 'lab1-s2', undefined]]);
  t.same({ ...spec.links[0]?.ends[1], mac: 'x' }, { node: 'sw', kind: 'bridge', ifName: 'p1', addresses: [], mac: 'x' });
  const net = parseLab(`name: n\nnetworks:\n  a: { subnet: 10.9.0.0/24, gateway: 10.9.0.254, ip-range: 10.9.0.128/25, subnet6: "fd00:9::/64", gateway6: "fd00:9::1", internal: true, dns: false, mtu: 1400, options: { icc: "false" } }\nnodes: {}\n`).networks[0];
  t.same(net?.request, {
    name: 'n-a', driver: 'bridge', subnets: [{ subnet: '10.9.0.0/24', gateway: '10.9.0.254', ipRange: '10.9.0.128/25' }, { subnet: 'fd00:9::/64', gateway: 'fd00:9::1' }],
    ipv6: true, internal: true, options: { icc: 'false', mtu: '1400' }, dnsEnabled: false,
  });
});

t.test('invalid files: each error names the path at fault', async (t) => {
  const cases: [string, string, RegExp, string][] = [
    ['name: lab1\nnodes: [1, 2\n', 'line 3', /Flow sequence/, 'YAML syntax'],
    ['nodes: {}\n', 'name', /expected string|Invalid input/i, 'missing name'],
    ['name: "bad name"\nnodes: {}\n', 'name', /must be/, 'bad lab name'],
    ['name: lab1\nnodes: {}\nfoo: 1\n', '(file)', /unknown field "foo"/, 'unknown top-level field'],
    [withNodes('  r1: { colour: red }\n'), 'nodes.r1', /unknown field "colour"/, 'unknown node field'],
    [withNodes('  "r 1": {}\n'), 'nodes.r 1', /must be a name/, 'bad node name'],
    [withNodes('  r1: { networks: [wan] }\n'), 'nodes.r1.networks[0]', /no network "wan"/, 'unknown network'],
    [withNodes('  r1: { networks: [lan, lan] }\n'), 'nodes.r1.networks[1]', /twice/, 'a network twice'],
    [withNodes('  r1: { networks: [{ network: lan, ipv4: 10.0.0.300 }] }\n'), 'nodes.r1.networks[0].ipv4', /invalid/, 'bad static IPv4'],
    [withNodes('  r1: { networks: [{ network: lan, ipv4: "fd00::1" }] }\n'), 'nodes.r1.networks[0].ipv4', /not an IPv4/, 'IPv6 as ipv4'],
    [withNodes('  r1: { networks: [{ network: lan6, ipv6: 10.0.0.1 }] }\n'), 'nodes.r1.networks[0].ipv6', /not an IPv6/, 'IPv4 as ipv6'],
    [withNodes('  r1: { networks: [{ network: lan, mac: "zz" }] }\n'), 'nodes.r1.networks[0].mac', /./, 'bad MAC'],
    [withNodes('  r1: { networks: [{ network: lan, aliases: ["a b"] }] }\n'), 'nodes.r1.networks[0].aliases[0]', /DNS label/, 'bad alias'],
    [withNodes('  r1: { networks: [lan], ports: ["8080:80", "99999:80"] }\n'), 'nodes.r1.ports[1]', /outside 1-65535/, 'bad port'],
    [withNodes('  r1: { ports: ["80"] }\n'), 'nodes.r1.ports', /no network/, 'ports without a network'],
    [withNodes('  r1: { cmd: "sleep 1 && true" }\n'), 'nodes.r1.cmd', /shell operator "&&"/, 'a shell operator in cmd'],
    [withNodes('  r1: { cmd: "" }\n'), 'nodes.r1.cmd', /./, 'empty cmd'],
    [withNodes('  r1: { exec: ["ip route add x | y"] }\n'), 'nodes.r1.exec[0]', /shell operator "\|"/, 'a pipe in exec'],
    [withNodes('  r1: { env: { "A=B": x } }\n'), 'nodes.r1.env.A=B', /variable name/, 'bad env name'],
    [withNodes('  r1: { sysctls: { kernel.pid_max: 1 } }\n'), 'nodes.r1.sysctls.kernel.pid_max', /net\.\*/, 'a non-net sysctl'],
    [withNodes('  r1: { sysctls: { net.ipv4.ip_forward: "1 2" } }\n'), 'nodes.r1.sysctls.net.ipv4.ip_forward', /plain value/, 'a sysctl value with a space'],
    [withNodes('  r1: { rootfs: relative/dir }\n'), 'nodes.r1.rootfs', /absolute/, 'relative rootfs'],
    [withNodes('  r1: { workdir: tmp }\n'), 'nodes.r1.workdir', /absolute/, 'relative workdir'],
    [withNodes('  r1: { hostname: "-x" }\n'), 'nodes.r1.hostname', /host name/, 'bad hostname'],
    [withNodes('  r1: { kind: router }\n'), 'nodes.r1.kind', /./, 'unknown kind'],
    [withNodes('  r1: { bridge: br0 }\n'), 'nodes.r1.bridge', /only a bridge node/, 'bridge name on a linux node'],
    [withNodes('  s1: { kind: bridge, cmd: "sleep 1" }\n'), 'nodes.s1.cmd', /no such field/, 'cmd on a bridge node'],
    [withNodes('  s1: { kind: bridge, networks: [lan] }\n'), 'nodes.s1.networks', /no such field/, 'networks on a bridge node'],
    [withNodes('  s1: { kind: bridge, bridge: "much-too-long-name" }\n'), 'nodes.s1.bridge', /interface name/, 'bridge name too long'],
    ['name: a-very-long-lab-name\nnodes:\n  switch1: { kind: bridge }\n', 'nodes.switch1.bridge', /longer than 15/, 'default bridge name too long'],
    [withNodes('  s1: { kind: bridge, mtu: 10 }\n'), 'nodes.s1.mtu', /68 to 65535/, 'bridge MTU out of range'],
    [withNodes('  r1: {}\n', '  - endpoints: ["r1:eth1"]\n'), 'links[0].endpoints', /./, 'one endpoint'],
    [withNodes('  r1: {}\n', '  - endpoints: ["r1", "r1:eth2"]\n'), 'links[0].endpoints[0]', /NODE:INTERFACE/, 'endpoint without interface'],
    [withNodes('  r1: {}\n', '  - endpoints: ["r1:eth1", "r9:eth1"]\n'), 'links[0].endpoints[1]', /no node "r9"/, 'unknown node'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: ["r1:eth1", "r2:eth1"]\n  - endpoints: ["r1:eth1", "r2:eth2"]\n'), 'links[1].endpoints[0]', /already an endpoint of links\[0\]/, 'an interface in two links'],
    [withNodes('  r1: { networks: [lan] }\n  r2: {}\n', '  - endpoints: ["r1:eth0", "r2:eth1"]\n'), 'links[0].endpoints[0]', /interface on network "lan"/, 'a link on a network interface'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: [{ node: r1, interface: "this-is-too-long" }, "r2:eth1"]\n'), 'links[0].endpoints[0].interface', /./, 'interface name too long'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: [{ node: r1, interface: eth1, ipv4: 10.0.0.1 }, "r2:eth1"]\n'), 'links[0].endpoints[0].ipv4', /ADDRESS\/LENGTH|prefix length/, 'address without prefix length'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: [{ node: r1, interface: eth1, ipv4: "fd00::1/64" }, "r2:eth1"]\n'), 'links[0].endpoints[0].ipv4', /IPv4/, 'IPv6 as link ipv4'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: [{ node: r1, interface: eth1, ipv6: "10.0.0.1/24" }, "r2:eth1"]\n'), 'links[0].endpoints[0].ipv6', /IPv6/, 'IPv4 as link ipv6'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: [{ node: r1, interface: eth1, mac: "01:02" }, "r2:eth1"]\n'), 'links[0].endpoints[0].mac', /./, 'bad link MAC'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: [{ node: r1, interface: eth1, vlan: 3 }, "r2:eth1"]\n'), 'links[0].endpoints[0]', /unknown field "vlan"/, 'unknown endpoint field'],
    [withNodes('  r1: {}\n  s1: { kind: bridge }\n', '  - endpoints: ["r1:eth1", { node: s1, interface: p1, ipv4: 10.0.0.1/24 }]\n'), 'links[0].endpoints[1]', /bridge port/, 'an address on a bridge port'],
    [withNodes('  s1: { kind: bridge }\n', '  - endpoints: ["s1:a", "s1:b"]\n'), 'links[0].endpoints', /same bridge/, 'a bridge linked to itself'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: ["r1:eth1", "r2:eth1"]\n    mtu: 70000\n'), 'links[0].mtu', /68 to 65535/, 'link MTU out of range'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: ["r1:eth1", "r2:eth1"]\n    impair: { rate: fast }\n'), 'links[0].impair.rate', /rate such as 10mbit/, 'bad rate'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: ["r1:eth1", "r2:eth1"]\n    impair: { delay: 20 }\n'), 'links[0].impair.delay', /duration/, 'delay without unit'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: ["r1:eth1", "r2:eth1"]\n    impair: { jitter: 2ms }\n'), 'links[0].impair.jitter', /needs a delay/, 'jitter without delay'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: ["r1:eth1", "r2:eth1"]\n    impair: { loss: 120% }\n'), 'links[0].impair.loss', /0 to 100/, 'loss over 100%'],
    [withNodes('  r1: {}\n  r2: {}\n', '  - endpoints: ["r1:eth1", "r2:eth1"]\n    impair: { corrupt: 1% }\n'), 'links[0].impair', /unknown field "corrupt"/, 'unknown impairment'],
    ['name: n\nnetworks:\n  a: { subnet: 10.9.0.0/33 }\nnodes: {}\n', 'networks.a.subnet', /./, 'bad subnet'],
    ['name: n\nnetworks:\n  a: { gateway: 10.9.0.1 }\nnodes: {}\n', 'networks.a.gateway', /needs a subnet/, 'gateway without subnet'],
    ['name: n\nnetworks:\n  a: { subnet: 10.9.0.0/24, gateway: x }\nnodes: {}\n', 'networks.a.gateway', /./, 'bad gateway'],
    ['name: n\nnetworks:\n  a: { subnet6: "fd00::/129" }\nnodes: {}\n', 'networks.a.subnet6', /./, 'bad subnet6'],
    ['name: n\nnetworks:\n  a: { gateway6: "fd00::1" }\nnodes: {}\n', 'networks.a.gateway6', /needs subnet6/, 'gateway6 without subnet6'],
    ['name: n\nnetworks:\n  a: { driver: macvlan }\nnodes: {}\n', 'networks.a.driver', /./, 'another driver'],
    ['name: n\nnetworks:\n  a: { mtu: 20 }\nnodes: {}\n', 'networks.a.mtu', /68 to 65535/, 'network MTU'],
    ['name: n\nnetworks:\n  a: { internal: "yes" }\nnodes: {}\n', 'networks.a.internal', /./, 'internal not a boolean'],
    ['name: n\ndefaults: { image: alpine }\nnodes: {}\n', 'defaults', /unknown field "image"/, 'unknown default'],
    ['name: n\ndefaults: { cmd: "a; b" }\nnodes: { r1: {} }\n', 'defaults.cmd', /shell operator/, 'an operator in defaults.cmd'],
  ];
  for (const [text, path, re, msg] of cases) refused(t, text, path, re, msg);
});

t.test('every problem of a file is reported at once', async (t) => {
  try {
    parseLab(withNodes('  r1: { networks: [wan], hostname: "-" }\n', '  - endpoints: ["r1:eth1", "r9:eth1"]\n'), 'lab.yaml');
    t.fail('accepted');
  } catch (err) {
    const m = (err as Error).message;
    t.match(m, /^lab\.yaml: 3 problems:/);
    for (const p of ['nodes.r1.networks[0]:', 'nodes.r1.hostname:', 'links[0].endpoints[1]:']) t.ok(m.includes(p), `names ${p}`);
    t.same((err as TsnetError).details['field'], 'nodes.r1.networks[0]');
  }
});

t.test('paths and units', async (t) => {
  t.equal(pathText(['nodes', 'r2', 'ports', 0]), 'nodes.r2.ports[0]');
  t.equal(pathText([]), '(file)');
  t.equal(parseRate('10mbit'), 10_000_000);
  t.equal(parseRate('1.5gbit'), 1_500_000_000);
  t.equal(parseRate('100kbps'), 800_000, 'bps is bytes, as tc says');
  t.throws(() => parseRate('10'), /rate such as/);
  t.throws(() => parseRate('0bit'), /at least/);
  t.equal(parseDuration('20ms'), 20_000);
  t.equal(parseDuration('1.5s'), 1_500_000);
  t.equal(parseDuration('250us'), 250);
  t.throws(() => parseDuration('2m'), /duration/);
  t.throws(() => parseDuration('61s'), /at most/);
  t.equal(parsePercent('1%'), 1);
  t.equal(parsePercent(0.5), 0.5);
  t.throws(() => parsePercent('-1%'), /percentage/);
  t.equal(formatImpairment({ rate: 10_000_000, delayUs: 20_000, jitterUs: 2000, lossPct: 1 }), 'rate 10mbit delay 20ms ±2ms loss 1%');
  t.equal(formatImpairment(undefined), '');
});

t.test('lab/lab.schema.json is what the schema gives (npm run lab-schema)', async (t) => {
  const file = readFileSync(new URL('./lab.schema.json', import.meta.url), 'utf8');
  t.equal(file, labJsonSchemaText(), 'up to date');
  const schema = JSON.parse(file) as { properties: Record<string, unknown>; required: string[] };
  t.same(Object.keys(schema.properties).sort(), ['defaults', 'links', 'name', 'networks', 'nodes']);
  t.same(schema.required.sort(), ['name', 'nodes']);
});
