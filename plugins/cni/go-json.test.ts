import t from 'tap';
import { goField, goPath, isJsonObject } from './go-json.js';

// The same cases run through Go's own decoder in test/integration/go-json.test.ts.
t.test('goField: keys match case-insensitively, as encoding/json matches struct fields', async (t) => {
  const j = (s: string): Record<string, unknown> => JSON.parse(s) as Record<string, unknown>;
  t.equal(goField(j('{"hostPort":80}'), 'hostPort'), 80, 'the json tag itself');
  t.equal(goField(j('{"HostPort":80}'), 'hostPort'), 80, "go-cni's Go field name");
  t.equal(goField(j('{"HOSTPORT":80}'), 'hostPort'), 80, 'any case');
  t.equal(goField(j('{"hostport":80}'), 'hostPort'), 80, 'lower case');
  t.equal(goField(j('{"hostIp":"1.2.3.4"}'), 'hostIP'), '1.2.3.4', "CRI's protobuf JSON spelling");
  t.equal(goField(j('{"host_port":80}'), 'hostPort'), undefined, 'other characters must be equal');
  t.equal(goField(j('{"hostPorts":80}'), 'hostPort'), undefined, 'no prefix match');
  t.equal(goField(j('{"ſubnet":"10.0.0.0/8"}'), 'subnet'), '10.0.0.0/8', 'U+017F LONG S folds to s');
  t.equal(goField(j('{"\u212Aind":"k"}'), 'kind'), 'k', 'U+212A KELVIN SIGN folds to k');
  t.equal(goField(j('{"sübnet":1}'), 'subnet'), undefined, 'other non-ASCII letters fold to nothing ASCII');
  t.equal(goField(j('{"İp":1}'), 'ip'), undefined, 'U+0130 does not fold to i');
  t.equal(goField({}, 'x'), undefined, 'absent');
  t.equal(goField(undefined, 'x'), undefined, 'not an object');
  t.equal(goField([1], 'x'), undefined, 'a list is not an object');
});

t.test('goField: a key given twice in two cases: the later wins, objects merge (documented decoder order)', async (t) => {
  const j = (s: string): Record<string, unknown> => JSON.parse(s) as Record<string, unknown>;
  t.equal(goField(j('{"hostPort":80,"HostPort":8080}'), 'hostPort'), 8080, 'later of two spellings');
  t.equal(goField(j('{"HostPort":8080,"hostPort":80}'), 'hostPort'), 80, 'order decides, not which spelling is exact');
  t.same(goField(j('{"ips":["10.0.0.2"],"IPs":["10.0.0.3","10.0.0.4"]}'), 'ips', 'nullable'), ['10.0.0.3', '10.0.0.4'], 'a list is replaced, not appended');
  t.same(
    goField(j('{"bandwidth":{"ingressRate":1,"ingressBurst":2},"Bandwidth":{"IngressRate":3,"egressRate":4}}'), 'bandwidth', 'nullable'),
    { ingressRate: 1, ingressBurst: 2, IngressRate: 3, egressRate: 4 },
    'two objects merge (decoded into the same struct)',
  );
  const merged = goField(j('{"bandwidth":{"ingressRate":1,"ingressBurst":2},"Bandwidth":{"IngressRate":3,"egressRate":4}}'), 'bandwidth', 'nullable');
  t.equal(goField(merged, 'ingressRate'), 3, 'inside a merge, the later spelling still wins');
  t.equal(goField(merged, 'ingressBurst'), 2, 'what only the first set stays');
  t.same(goField(j('{"rc":{"a":{"x":1}},"RC":{"a":{"y":2}}}'), 'rc'), { a: { x: 1, y: 2 } }, 'nested objects under one key merge too');
  t.same(goField(j('{"m":{"a":1},"M":{"a":{"y":2}}}'), 'm'), { a: { y: 2 } }, 'a value replaced by an object');
});

t.test('goField: null has no effect on a value field, clears a nullable one', async (t) => {
  const j = (s: string): Record<string, unknown> => JSON.parse(s) as Record<string, unknown>;
  t.equal(goField(j('{"hostPort":null}'), 'hostPort'), undefined, 'null alone: absent');
  t.equal(goField(j('{"hostPort":80,"HostPort":null}'), 'hostPort'), 80, 'a later null leaves an int as it was');
  t.equal(goField(j('{"hostPort":80,"HostPort":null}'), 'hostPort', 'nullable'), undefined, 'a later null clears a slice, map or pointer');
  t.equal(goField(j('{"hostPort":null,"HostPort":80}'), 'hostPort', 'nullable'), 80, 'null then a value');
  t.same(goField(j('{"bandwidth":{"ingressRate":1},"BANDWIDTH":null,"Bandwidth":{"egressRate":2}}'), 'bandwidth', 'nullable'), { egressRate: 2 }, 'a pointer set to nil, then allocated afresh: no merge across the null');
  t.same(goField(j('{"dns":{"servers":["a"]},"DNS":null,"Dns":{"searches":["b"]}}'), 'dns'), { servers: ['a'], searches: ['b'] }, 'a struct ignores the null: the two objects merge');
  t.same(goField(j('{"m":{"a":1,"b":2},"M":{"a":null}}'), 'm'), { a: 1, b: 2 }, 'a null inside a merge keeps the earlier value');
});

t.test('goPath walks fields; the kind applies to the last', async (t) => {
  const cfg = JSON.parse('{"RuntimeConfig":{"PortMappings":[{"HostPort":1}]},"runtimeConfig":{"mac":"02:00:00:00:00:01"}}') as Record<string, unknown>;
  t.same(goPath(cfg, ['runtimeConfig', 'portMappings'], 'nullable'), [{ HostPort: 1 }], 'two spellings of runtimeConfig merge');
  t.equal(goPath(cfg, ['runtimeConfig', 'mac']), '02:00:00:00:00:01');
  t.equal(goPath(cfg, ['runtimeConfig', 'ips', 'x']), undefined, 'a missing step: undefined');
  t.equal(goPath({ a: 5 }, ['a', 'b']), undefined, 'a step that is not an object: undefined');
  t.ok(isJsonObject({}) && !isJsonObject(null) && !isJsonObject([]) && !isJsonObject('x'), 'isJsonObject');
});
