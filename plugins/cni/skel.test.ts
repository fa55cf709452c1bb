import t from 'tap';
import { TsnetError, fsError } from '../../core/errors.js';
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
  const att = { CNI_CONTAINERID: 'c1', CNI_NETNS: '/n', CNI_IFNAME: 'eth0', CNI_ARGS: 'IgnoreUnknown=1;K=v' };
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

t.test('CNI_ARGS as the reference plugins read it: unknown keys only with IgnoreUnknown=1', async (t) => {
  const base = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/n', CNI_IFNAME: 'eth0' };
  t.same([...parseEnv({ ...base, CNI_ARGS: 'IP=10.0.0.5;K8S_POD_NAME=web;K8S_POD_NAMESPACE=default;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u;MAC=02:00:00:00:00:01' }).args.keys()].length, 6, 'the known keys');
  t.throws(() => parseEnv({ ...base, CNI_ARGS: 'FOO=1' }), { code: 4, message: /CNI_ARGS: unknown argument FOO .*IgnoreUnknown=1/ }, 'unknown key: error 4 naming it');
  t.throws(() => parseEnv({ ...base, CNI_ARGS: 'IgnoreUnknown=0;FOO=1;BAR=2' }), { code: 4, message: /unknown arguments FOO, BAR/ });
  t.equal(parseEnv({ ...base, CNI_ARGS: 'IgnoreUnknown=1;FOO=1' }).args.get('FOO'), '1', 'IgnoreUnknown=1');
  t.equal(parseEnv({ ...base, CNI_ARGS: 'IgnoreUnknown=TRUE;FOO=1' }).args.get('FOO'), '1', 'IgnoreUnknown=true, any case');
  t.throws(() => parseEnv({ ...base, CNI_ARGS: 'IgnoreUnknown=yes;FOO=1' }), { code: 4, message: /IgnoreUnknown="yes": must be 1, 0, true or false/ });
  t.same([...parseEnv({ ...base, CNI_COMMAND: 'STATUS', CNI_ARGS: 'FOO=1' }).args.keys()], [], 'not read for STATUS/GC');
});

t.test('error codes: 7 for bad configuration whatever the errno, 11 only for transient conditions, 5 for I/O', async (t) => {
  const cases: [unknown, string, number][] = [
    [fsError('ipam dataDir /dev/null/n', Object.assign(new Error('not a directory'), { code: 'ENOTDIR' }), 'dataDir'), 'ADD', 7],
    [fsError('ipam dataDir /x', Object.assign(new Error('name too long'), { code: 'ENAMETOOLONG' }), 'dataDir'), 'ADD', 7],
    [fsError('reserve 10.0.0.2', Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }), 'dataDir'), 'ADD', 5],
    [fsError('reserve 10.0.0.2', Object.assign(new Error('read-only file system'), { code: 'EROFS' })), 'DEL', 5],
    [new TsnetError('UNAVAILABLE', 'lock x: not acquired within 30000 ms'), 'ADD', 11],
    [new TsnetError('UNAVAILABLE', 'lock x: not acquired within 30000 ms'), 'STATUS', 50],
    [new TsnetError('UNAVAILABLE', 'nft: not installed or not on PATH', { details: { missingBinary: true } }), 'ADD', 999],
    [new TsnetError('INVALID_CONFIG', 'mtu: must be an integer'), 'ADD', 7],
    [new AggregateError([new TsnetError('IO_FAILURE', 'disk full')], 'teardown: disk full'), 'DEL', 5],
  ];
  for (const [err, verb, code] of cases) t.equal(toCniError(err, verb).code, code, `${(err as Error).message} (${verb}) -> ${code}`);
});
