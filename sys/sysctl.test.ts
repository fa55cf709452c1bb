import t from 'tap';
import { TsnetError } from '../core/errors.js';
import type { Argv, RunOptions, RunResult } from './exec.js';
import { classifySysctlError, createSysctl, parseSysctlKey, sysctlPath } from './sysctl.js';

t.test('keys: dotted form, a "/" for a dot inside a segment, no traversal', async (t) => {
  t.equal(sysctlPath('net.ipv4.ip_forward'), 'net/ipv4/ip_forward');
  t.equal(sysctlPath('net.ipv4.conf.br/5.route_localnet'), 'net/ipv4/conf/br.5/route_localnet');
  for (const bad of ['', 'net', 'net..ipv4', 'net.ipv4.conf.//.x', 'net.ipv4.conf./.x', 'net.ipv4 .x', 'net.ipv4.conf.a\nb.x', '.net.x', 'net.x.']) {
    t.throws(() => parseSysctlKey(bad), { code: 'INVALID_CONFIG', details: { field: 'sysctl key' } }, JSON.stringify(bad));
  }
  t.equal(classifySysctlError('sysctl: cannot stat /proc/sys/net/x: No such file or directory'), 'NOT_FOUND');
  t.equal(classifySysctlError('sysctl: setting key "net.ipv4.ip_forward": Invalid argument'), 'INVALID_CONFIG');
  t.equal(classifySysctlError('sysctl: permission denied on key "net.x"'), 'UNAVAILABLE');
});

t.test('host namespace: plain file reads and writes under /proc/sys', async (t) => {
  const files = new Map<string, string>([['/p/net/ipv4/ip_forward', '0\n'], ['/p/net/ipv4/conf/br.5/forwarding', '0\n']]);
  const enoent = (path: string) => Object.assign(new Error(`ENOENT: no such file or directory, open '${path}'`), { code: 'ENOENT' });
  const sc = createSysctl({ kind: 'host' }, {
    procSys: '/p',
    run: async () => t.fail('no process for the host namespace') as never,
    readFile: async (path) => {
      const v = files.get(path);
      if (v === undefined) throw enoent(path);
      return v;
    },
    writeFile: async (path, data) => {
      if (!files.has(path)) throw enoent(path);
      if (!/^\d+$/.test(data)) throw Object.assign(new Error('EINVAL: invalid argument, write'), { code: 'EINVAL' });
      files.set(path, `${data}\n`);
    },
  });
  t.equal(await sc.get('net.ipv4.ip_forward'), '0');
  await sc.set({ 'net.ipv4.ip_forward': 1, 'net.ipv4.conf.br/5.forwarding': '1' });
  t.equal(files.get('/p/net/ipv4/ip_forward'), '1\n');
  t.equal(files.get('/p/net/ipv4/conf/br.5/forwarding'), '1\n');
  await t.rejects(sc.get('net.ipv4.conf.nope.forwarding'), { code: 'NOT_FOUND' });
  await t.rejects(sc.set({ 'net.ipv4.conf.nope.forwarding': 1, 'net.ipv4.ip_forward': 0 }), { code: 'NOT_FOUND' });
  t.equal(files.get('/p/net/ipv4/ip_forward'), '0\n', 'the other keys were still written');
  await t.rejects(sc.set({ 'net.ipv4.ip_forward': 'x' }), { code: 'INVALID_CONFIG' });
  await t.rejects(sc.set({ 'net.ipv4.ip_forward': 'a\nb' }), { code: 'INVALID_CONFIG' }, 'one-line values only');
  await t.rejects(sc.set({ 'net.ipv4.ip_forward': 1.5 }), { code: 'INVALID_CONFIG' });
  await t.rejects(sc.set({ 'net.ipv4.ip_forward': 1, 'bad..key': 1 }), { code: 'INVALID_CONFIG' });
  t.equal(files.get('/p/net/ipv4/ip_forward'), '0\n', 'validated before writing anything');
});

t.test('other namespace: one nsenter sysctl process per call, errors mapped from stderr', async (t) => {
  const calls: Argv[] = [];
  let fail: string | undefined;
  const run = async (argv: Argv, _opts?: RunOptions): Promise<RunResult> => {
    calls.push(argv);
    if (fail !== undefined) {
      throw new TsnetError('INTERNAL', `${argv.join(' ')}: ${fail}`, { details: { argv, exitCode: 255, signal: null, stderr: fail, stdout: '' } });
    }
    return { stdout: '1\n', stderr: '' };
  };
  const sc = createSysctl({ kind: 'path', path: '/run/netns/c1' }, { run });
  t.equal(await sc.get('net.ipv4.conf.br/5.route_localnet'), '1');
  await sc.set({ 'net.ipv4.ip_forward': 1, 'net.ipv4.conf.eth0.route_localnet': '1' });
  await sc.set({});
  t.same(calls, [
    ['nsenter', '--net=/run/netns/c1', '--', 'sysctl', '-n', 'net/ipv4/conf/br.5/route_localnet'],
    ['nsenter', '--net=/run/netns/c1', '--', 'sysctl', '-q', '-w', 'net/ipv4/ip_forward=1', 'net/ipv4/conf/eth0/route_localnet=1'],
  ]);
  fail = 'sysctl: cannot stat /proc/sys/net/ipv4/conf/nope/forwarding: No such file or directory';
  await t.rejects(sc.get('net.ipv4.conf.nope.forwarding'), { code: 'NOT_FOUND', message: /cannot stat/ });
  fail = 'sysctl: setting key "net/ipv4/ip_forward": Invalid argument';
  await t.rejects(sc.set({ 'net.ipv4.ip_forward': 'abc' }), { code: 'INVALID_CONFIG' });
  fail = 'nsenter: cannot open /run/netns/c1: No such file or directory';
  await t.rejects(sc.get('net.ipv4.ip_forward'), { code: 'NOT_FOUND' }, 'namespace gone');
});
