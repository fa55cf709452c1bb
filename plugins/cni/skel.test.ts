import t from 'tap';
import { TsnetError } from '../../core/errors.js';
import { CniError, toCniError } from './errors.js';
import { dispatch, parseCniArgs, parseConfig, parseEnv, parseValidAttachments, type Plugin, type Request } from './skel.js';
import { compareVersions, fromWire, toWire, type Result } from './spec.js';

const RESULT: Result = {
  interfaces: [{ name: 'br0', mac: '02:00:00:00:00:01' }, { name: 'eth0', sandbox: '/run/netns/x', socketPath: '/s', pciID: '0000:00:01.0' }],
  ips: [{ address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 1 }, { address: 'fd00::2/64', interface: 1 }],
  routes: [{ dst: '0.0.0.0/0', gw: '10.0.0.1', mtu: 1400, priority: 10 }],
  dns: { nameservers: ['10.0.0.1'] },
};

t.test('toWire writes each version\'s format', async (t) => {
  const w03 = toWire(RESULT, '0.3.1');
  t.same((w03['ips'] as unknown[])[0], { version: '4', address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 1 });
  t.same((w03['ips'] as { version: string }[])[1]?.version, '6');
  t.same((w03['routes'] as unknown[])[0], { dst: '0.0.0.0/0', gw: '10.0.0.1' }, 'no 1.1 route fields before 1.1.0');
  t.same((w03['interfaces'] as unknown[])[1], { name: 'eth0', sandbox: '/run/netns/x' }, 'no socketPath/pciID before 1.1.0');
  const w10 = toWire(RESULT, '1.0.0');
  t.notOk('version' in ((w10['ips'] as object[])[0] as object), 'no ips[].version from 1.0.0');
  t.same((w10['routes'] as unknown[])[0], { dst: '0.0.0.0/0', gw: '10.0.0.1' });
  const w11 = toWire(RESULT, '1.1.0');
  t.same((w11['routes'] as unknown[])[0], { dst: '0.0.0.0/0', gw: '10.0.0.1', mtu: 1400, priority: 10 });
  t.same((w11['interfaces'] as { socketPath?: string }[])[1]?.socketPath, '/s');
  t.equal(w11['cniVersion'], '1.1.0');
});

t.test('fromWire reads any version back (round trip) and names bad fields', async (t) => {
  for (const v of ['0.3.0', '0.4.0', '1.0.0', '1.1.0'] as const) {
    const back = fromWire(JSON.parse(JSON.stringify(toWire(RESULT, v))));
    t.same(back.ips, RESULT.ips, `${v}: ips`);
  }
  t.throws(() => fromWire({ ips: [{ address: 'nope' }] }), /prevResult\.ips\[0\]\.address/);
  t.throws(() => fromWire({ interfaces: [{}] }), /prevResult\.interfaces\[0\]\.name: missing/);
  t.throws(() => fromWire({ routes: [{ dst: 1 }] }), /prevResult\.routes\[0\]\.dst/);
  t.equal(compareVersions('0.4.0', '1.0.0'), -1);
  t.equal(compareVersions('1.1.0', '1.1.0'), 0);
});

t.test('parseEnv: required variables per verb, code 4 naming them', async (t) => {
  const ok = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0', CNI_PATH: '/a:/b' };
  const e = parseEnv(ok);
  t.same([e.verb, e.containerId, e.ifName, e.netns, e.path], ['ADD', 'c1', 'eth0', '/run/netns/x', ['/a', '/b']]);
  t.equal(parseEnv({ ...ok, CNI_COMMAND: 'DEL', CNI_NETNS: '' }).netns, undefined, 'DEL without netns');
  t.equal(parseEnv({ CNI_COMMAND: 'GC' }).verb, 'GC', 'GC needs no attachment');
  const code = (env: Record<string, string | undefined>): unknown => {
    try {
      parseEnv(env);
      return 'no error';
    } catch (err) {
      return [(err as CniError).code, (err as CniError).details.split(':')[0]];
    }
  };
  t.same(code({ ...ok, CNI_COMMAND: undefined }), [4, 'CNI_COMMAND']);
  t.same(code({ ...ok, CNI_CONTAINERID: '-x' }), [4, 'CNI_CONTAINERID']);
  t.same(code({ ...ok, CNI_IFNAME: '..' }), [4, 'CNI_IFNAME']);
  t.same(code({ ...ok, CNI_NETNS: undefined }), [4, 'CNI_NETNS']);
  t.same(code({ ...ok, CNI_COMMAND: 'CHECK', CNI_NETNS: undefined }), [4, 'CNI_NETNS']);
  t.same(code({ ...ok, CNI_ARGS: 'A=1;=2' }), [4, 'CNI_ARGS']);
  t.same([...parseCniArgs('IgnoreUnknown=true;IP=10.0.0.5;;K=a=b')], [['IgnoreUnknown', 'true'], ['IP', '10.0.0.5'], ['K', 'a=b']]);
});

t.test('parseConfig: decode 6, invalid 7, incompatible 1', async (t) => {
  const c = (s: string, verb: 'ADD' | 'CHECK' | 'GC' | 'STATUS' = 'ADD'): number | string => {
    try {
      return parseConfig(s, verb).cniVersion;
    } catch (err) {
      return (err as CniError).code;
    }
  };
  t.equal(c('{"cniVersion":"1.1.0","name":"n"}'), '1.1.0');
  t.equal(c('nope'), 6);
  t.equal(c('"str"'), 6);
  t.equal(c('{"name":"n"}'), 7);
  t.equal(c('{"cniVersion":"1.1.0"}'), 7);
  t.equal(c('{"cniVersion":"1.1.0","name":"-bad"}'), 7);
  t.equal(c('{"cniVersion":"0.2.0","name":"n"}'), 1);
  t.equal(c('{"cniVersion":"0.3.1","name":"n"}', 'CHECK'), 1);
  t.equal(c('{"cniVersion":"1.0.0","name":"n"}', 'STATUS'), 1);
  t.equal(c('{"cniVersion":"1.1.0","name":"n"}', 'GC'), '1.1.0');
  t.same(parseValidAttachments({ 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'eth0' }] }), [{ containerId: 'a', ifName: 'eth0' }]);
  t.throws(() => parseValidAttachments({ 'cni.dev/valid-attachments': [{ containerID: 1 }] }), /valid-attachments\[0\]/);
});

t.test('toCniError maps codes; UNAVAILABLE is 11 except for STATUS', async (t) => {
  t.equal(toCniError(new TsnetError('INVALID_CONFIG', 'x: bad'), 'ADD').code, 7);
  t.equal(toCniError(new TsnetError('UNAVAILABLE', 'lock'), 'ADD').code, 11);
  t.equal(toCniError(new TsnetError('UNAVAILABLE', 'down'), 'STATUS').code, 50);
  t.equal(toCniError(new Error('boom'), 'ADD').code, 999);
});

function fakePlugin(calls: string[]): Plugin {
  return {
    add: async (r: Request) => {
      calls.push(`add ${r.containerId} ${r.ifName} ${r.cniVersion} ${r.args.get('K') ?? ''}`);
      return RESULT;
    },
    del: async () => void calls.push('del'),
    check: async () => {
      throw new TsnetError('NOT_FOUND', 'address 10.0.0.2/24 is missing');
    },
    status: async () => void calls.push('status'),
    gc: async (_r, valid) => void calls.push(`gc ${valid.map((v) => v.containerId).join(',')}`),
  };
}

t.test('dispatch: stdout carries only the result or the error object; exit status', async (t) => {
  const run = async (env: Record<string, string>, stdin: string): Promise<{ code: number; out: string; calls: string[] }> => {
    let out = '';
    const calls: string[] = [];
    const code = await dispatch({ env, readStdin: async () => stdin, write: (s) => void (out += s) }, async () => fakePlugin(calls));
    return { code, out, calls };
  };
  const att = { CNI_CONTAINERID: 'c1', CNI_NETNS: '/n', CNI_IFNAME: 'eth0', CNI_ARGS: 'K=v' };
  const add = await run({ CNI_COMMAND: 'ADD', ...att }, '{"cniVersion":"0.4.0","name":"n"}');
  t.equal(add.code, 0);
  t.equal((JSON.parse(add.out) as { cniVersion: string }).cniVersion, '0.4.0');
  t.same(add.calls, ['add c1 eth0 0.4.0 v']);
  const del = await run({ CNI_COMMAND: 'DEL', ...att }, '{"cniVersion":"1.1.0","name":"n"}');
  t.same([del.code, del.out, del.calls], [0, '', ['del']], 'DEL prints nothing');
  const chk = await run({ CNI_COMMAND: 'CHECK', ...att }, '{"cniVersion":"1.0.0","name":"n"}');
  t.equal(chk.code, 1);
  t.same(JSON.parse(chk.out), { cniVersion: '1.0.0', code: 3, msg: 'address 10.0.0.2/24 is missing', details: 'address 10.0.0.2/24 is missing' });
  const gc = await run({ CNI_COMMAND: 'GC' }, '{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}');
  t.same([gc.code, gc.calls], [0, ['gc a']]);
  const ver = await run({ CNI_COMMAND: 'VERSION' }, '');
  t.same(JSON.parse(ver.out), { cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  const bad = await run({ CNI_COMMAND: 'ADD', ...att }, '{"cniVersion":"9.0.0","name":"n"}');
  t.same([bad.code, (JSON.parse(bad.out) as { code: number; cniVersion: string }).code, bad.calls], [1, 1, []], 'plugin never loaded on bad input');
});
