/**
 * tsnet's key matching (plugins/cni/go-json.ts) against Go's own decoder: the same documents
 * decoded by encoding/json into structs with the reference plugins' json tags (gojson, built from
 * test/helpers/go/) and read by goField into the same shape. Needs the Go toolchain and no root.
 */
import t from 'tap';
import { goField, isJsonObject } from '../../plugins/cni/go-json.js';
import { run } from '../../sys/exec.js';
import { goTools, goToolsMissing } from '../helpers/go-tools.js';
import { isRoot } from '../helpers/isolated-host.js';

const str = (v: unknown): unknown => v ?? '';
const num = (v: unknown): unknown => v ?? 0;
const bool = (v: unknown): unknown => v ?? false;
const list = (v: unknown): unknown => v ?? null;

/** The struct view gojson prints, read through goField with the field kinds of the Go structs. */
function view(raw: unknown): Record<string, unknown> {
  const rc = goField(raw, 'runtimeConfig');
  const dns = goField(rc, 'dns');
  const bw = goField(rc, 'bandwidth', 'nullable');
  const pms = goField(rc, 'portMappings', 'nullable');
  return {
    cniVersion: str(goField(raw, 'cniVersion')),
    name: str(goField(raw, 'name')),
    bridge: str(goField(raw, 'bridge')),
    isGateway: bool(goField(raw, 'isGateway')),
    isDefaultGateway: bool(goField(raw, 'isDefaultGateway')),
    ipMasq: bool(goField(raw, 'ipMasq')),
    mtu: num(goField(raw, 'mtu')),
    hairpinMode: bool(goField(raw, 'hairpinMode')),
    firewallBackend: str(goField(raw, 'firewallBackend')),
    capabilities: list(goField(raw, 'capabilities', 'nullable')),
    runtimeConfig: {
      portMappings: Array.isArray(pms)
        ? pms.map((m: unknown) => ({ hostPort: num(goField(m, 'hostPort')), containerPort: num(goField(m, 'containerPort')), protocol: str(goField(m, 'protocol')), hostIP: str(goField(m, 'hostIP')) }))
        : null,
      bandwidth: isJsonObject(bw)
        ? { ingressRate: num(goField(bw, 'ingressRate')), ingressBurst: num(goField(bw, 'ingressBurst')), egressRate: num(goField(bw, 'egressRate')), egressBurst: num(goField(bw, 'egressBurst')) }
        : null,
      dns: { servers: list(goField(dns, 'servers', 'nullable')), searches: list(goField(dns, 'searches', 'nullable')), options: list(goField(dns, 'options', 'nullable')) },
      ips: list(goField(rc, 'ips', 'nullable')),
      mac: str(goField(rc, 'mac')),
      aliases: list(goField(rc, 'aliases', 'nullable')),
    },
  };
}

const AGREE: readonly [string, string][] = [
  ['the conventions\' spelling', '{"cniVersion":"1.0.0","name":"n","bridge":"br0","isGateway":true,"ipMasq":true,"mtu":1400,"capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":""}],"bandwidth":{"ingressRate":1000000,"ingressBurst":4294967295,"egressRate":2000000,"egressBurst":4294967295},"dns":{"servers":["10.96.0.10"],"searches":["svc.cluster.local"],"options":["ndots:5"]}}}'],
  ['go-cni: Go field names', '{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":""}],"bandwidth":{"IngressRate":1000000,"IngressBurst":4294967295,"EgressRate":2000000,"EgressBurst":4294967295},"dns":{"Servers":["10.96.0.10"],"Searches":["svc.cluster.local"],"Options":["ndots:5"]}}}'],
  ['any case, config keys too', '{"CNIVERSION":"1.0.0","Name":"n","BRIDGE":"br0","IsGateway":true,"isdefaultgateway":true,"IPMASQ":true,"Mtu":9000,"HairpinMode":true,"FirewallBackend":"iptables","RuntimeConfig":{"IPs":["10.0.0.5"],"MAC":"02:00:00:00:00:05"}}'],
  ['KELVIN SIGN and LONG S', '{"iſGateway":true,"firewallBac\u212Aend":"none","runtimeConfig":{"dnſ":{"ſervers":["1.1.1.1"]}}}'],
  ['near misses are no match', '{"is_gateway":true,"isGateways":true,"bridge ":"x","runtimeConfig":{"portMappings":[{"host-port":1,"hostPort":2}]}}'],
  ['two spellings: the later wins', '{"hostPort":1,"bridge":"a","Bridge":"b","runtimeConfig":{"portMappings":[{"hostPort":80,"HostPort":8080,"ContainerPort":90,"containerPort":91}],"ips":["10.0.0.2"],"IPS":["10.0.0.3"]}}'],
  ['two spellings of an object merge', '{"runtimeConfig":{"bandwidth":{"ingressRate":1,"ingressBurst":2},"Bandwidth":{"IngressRate":3,"egressRate":4}},"RuntimeConfig":{"mac":"02:00:00:00:00:07"}}'],
  ['nested merges', '{"runtimeConfig":{"dns":{"servers":["a"]}},"RUNTIMECONFIG":{"dns":{"searches":["b"]},"DNS":{"Options":["c"]}}}'],
  ['maps merge by exact key', '{"runtimeConfig":{"aliases":{"lab":["web"],"Lab":["x"]},"Aliases":{"lab":["www"],"other":["y"]}},"capabilities":{"portMappings":true},"Capabilities":{"PortMappings":false}}'],
  ['null: no effect on values, clears slices, maps and pointers', '{"mtu":1400,"MTU":null,"bridge":null,"runtimeConfig":{"mac":"02:00:00:00:00:08","Mac":null,"ips":["10.0.0.2"],"IPs":null,"bandwidth":{"ingressRate":5,"ingressBurst":6},"Bandwidth":null,"aliases":{"a":["b"]},"ALIASES":null}}'],
  ['a pointer nil-ed then allocated afresh; a struct across a null merges', '{"runtimeConfig":{"bandwidth":{"ingressRate":5},"BANDWIDTH":null,"Bandwidth":{"egressRate":7},"dns":{"servers":["a"]},"DNS":null,"Dns":{"searches":["b"]}}}'],
  ['empty lists stay empty', '{"runtimeConfig":{"portMappings":[],"ips":[],"dns":{"servers":[]}}}'],
];

// Documented in plugins/cni/go-json.ts: JSON.parse resolves a key repeated with the same spelling
// before tsnet sees it; Go sees both occurrences.
const DIVERGE: readonly [string, string][] = [['one spelling repeated around another', '{"bridge":"a","Bridge":"b","bridge":"c"}']];

const missing = isRoot ? undefined : await goToolsMissing();

t.test('goField reads documents as encoding/json decodes them into plugin structs', { skip: missing ?? false }, async (t) => {
  const tools = await goTools();
  const cases = [...AGREE, ...DIVERGE];
  const { stdout } = await run([tools.gojson], { input: JSON.stringify(cases.map(([, doc]) => doc)) });
  const go = JSON.parse(stdout) as { decoded?: Record<string, unknown>; error?: string }[];
  t.equal(go.length, cases.length, 'one answer per case');
  AGREE.forEach(([label, doc], i) => {
    const g = go[i];
    t.notOk(g?.error, `${label}: Go decodes it`);
    t.same(view(JSON.parse(doc)), g?.decoded, label);
  });
  DIVERGE.forEach(([label, doc], i) => {
    const g = go[AGREE.length + i];
    t.equal(g?.decoded?.['bridge'], 'c', `${label}: Go takes the last occurrence`);
    t.equal(view(JSON.parse(doc))['bridge'], 'b', `${label}: tsnet sees JSON.parse's object (the divergence go-json.ts documents)`);
  });
});
