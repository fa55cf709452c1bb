import t from 'tap';
import { parseCniRequest } from './cni-service.js';

const req = (plugin: string, env: string[], stdin: string): Buffer => Buffer.concat([Buffer.from(`tsnet-cni 1\n${plugin}\n`), ...env.map((e) => Buffer.from(`${e}\0`)), Buffer.from('\0'), Buffer.from(stdin)]);

t.test('parseCniRequest: the front end\'s wire format (plugins/cni/bin/client.c)', async (t) => {
  const r = parseCniRequest(req('bridge', ['CNI_COMMAND=ADD', 'CNI_ARGS=IP=10.0.0.5;K8S_POD_NAME=a=b', 'TSNET_CNI_SOCKET=/x'], '{"cniVersion":"1.0.0"}'));
  t.same(r, { plugin: 'bridge', env: { CNI_COMMAND: 'ADD', CNI_ARGS: 'IP=10.0.0.5;K8S_POD_NAME=a=b', TSNET_CNI_SOCKET: '/x' }, stdin: '{"cniVersion":"1.0.0"}' }, 'plugin, env (values may hold "="), stdin');
  t.same(parseCniRequest(req('ipam', [], '')), { plugin: 'ipam', env: {}, stdin: '' }, 'no env, empty stdin');
  t.equal(parseCniRequest(req('bridge', ['CNI_COMMAND=ADD'], 'a\0b'))?.stdin, 'a\0b', 'stdin is taken whole, NULs included');
  t.equal(parseCniRequest(Buffer.from('tsnet-cni 2\nbridge\n\0')), undefined, 'another protocol version');
  t.equal(parseCniRequest(Buffer.from('tsnet-cni 1\nbridge')), undefined, 'no end of the plugin line');
  t.equal(parseCniRequest(Buffer.from('tsnet-cni 1\nbridge\nCNI_COMMAND=ADD')), undefined, 'an unterminated environment');
  t.equal(parseCniRequest(req('bridge', ['PATH=/bin'], '')), undefined, 'a variable that is not CNI_ or TSNET_CNI_');
  t.equal(parseCniRequest(req('bridge', ['=x'], '')), undefined, 'an empty name');
  t.equal(parseCniRequest(Buffer.alloc(0)), undefined, 'nothing');
});
