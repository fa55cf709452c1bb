import t from 'tap';
import { containerArgv, exitCodeOf, setupFailure, fstabEscape, fstabText, hostnameArgv, mountArgv, nativeSpec, rootfsMountPoints, waiterArgv } from './shim-plan.js';
import type { ShimSpec } from './spec.js';

const tools = { env: '/usr/bin/env', nsenter: '/usr/bin/nsenter', unshare: '/usr/bin/unshare', mount: '/usr/bin/mount', hostname: '/usr/bin/hostname', cat: '/usr/bin/cat' };
const base: ShimSpec = {
  schemaVersion: 1, id: 'c'.repeat(64), hostname: 'web1', argv: ['/bin/sleep', '30'], env: { PATH: '/bin', A: 'x y=z' }, cwd: '/',
  rootfs: null, netns: { kind: 'path', path: '/run/tsnet/netns/web1' },
  binds: [{ source: '/run/tsnet/c/files/0-etc-hosts', target: '/etc/hosts' }], tools, tty: null, openStdin: false, waitAttach: false,
  paths: { state: '/r/state.json', fstab: '/r/fstab', stdout: '/l/stdout.log', stderr: '/l/stderr.log', attach: '/r/attach.sock' },
};

t.test('host-tree container in a given netns', async (t) => {
  t.same(waiterArgv(base), ['/usr/bin/unshare', '--uts', '--ipc', '--mount', '--propagation', 'private', '--', '/usr/bin/cat']);
  t.same(hostnameArgv(base, 42), ['/usr/bin/nsenter', '--target', '42', '--uts', '--', '/usr/bin/hostname', 'web1']);
  t.same(mountArgv(base, 42), ['/usr/bin/nsenter', '--target', '42', '--mount', '--', '/usr/bin/mount', '--all', '--fstab', '/r/fstab']);
  t.equal(fstabText(base), '/run/tsnet/c/files/0-etc-hosts /etc/hosts none bind 0 0\n');
  t.same(rootfsMountPoints(base), [], 'nothing is created on the host tree');
  t.same(containerArgv(base, 42), [
    '/usr/bin/env', '-i', '--', 'PATH=/bin', 'A=x y=z',
    '/usr/bin/nsenter', '--target', '42', '--mount', '--uts', '--ipc', '--net=/run/tsnet/netns/web1', '--',
    '/usr/bin/unshare', '--pid', '--fork', '--mount-proc', '--kill-child', '--wd=/', '--', '/bin/sleep', '30',
  ]);
});

t.test('host network, no files: no --net, no mount step', async (t) => {
  const s: ShimSpec = { ...base, netns: { kind: 'host' }, binds: [] };
  t.equal(mountArgv(s, 1), undefined);
  t.equal(fstabText(s), '');
  t.notOk(containerArgv(s, 7).some((a) => a.startsWith('--net')));
});

t.test('rootfs container: /dev, /proc and bind targets inside the rootfs, chroot', async (t) => {
  const s: ShimSpec = { ...base, rootfs: '/var/lib/r/', cwd: '/srv', binds: [{ source: '/x/my hosts', target: '/etc/hosts' }] };
  t.equal(fstabText(s), '/dev /var/lib/r/dev none bind 0 0\n/x/my\\040hosts /var/lib/r/etc/hosts none bind 0 0\n');
  t.same(rootfsMountPoints(s), [
    { path: '/var/lib/r/proc', kind: 'dir' },
    { path: '/var/lib/r/dev', kind: 'dir' },
    { path: '/var/lib/r/etc/hosts', kind: 'file' },
  ]);
  const argv = containerArgv(s, 9);
  t.same(argv.slice(argv.indexOf('/usr/bin/unshare')), ['/usr/bin/unshare', '--pid', '--fork', '--mount-proc', '--kill-child', '--root=/var/lib/r/', '--wd=/srv', '--', '/bin/sleep', '30']);
});

t.test('fstab escapes and exit codes', async (t) => {
  t.equal(fstabEscape('/a b\tc\nd\\e'), '/a\\040b\\011c\\012d\\134e');
  t.equal(exitCodeOf(3, undefined), 3);
  t.equal(exitCodeOf(null, 9), 137);
  t.equal(exitCodeOf(null, 15), 143);
});

t.test('setup failures are told apart from the command failing', async (t) => {
  t.equal(setupFailure("nsenter: cannot open /run/x: No such file or directory\nmore"), 'nsenter: cannot open /run/x: No such file or directory');
  t.equal(setupFailure('unshare: cannot change root directory to /r: No such file or directory\n'), 'unshare: cannot change root directory to /r: No such file or directory');
  t.equal(setupFailure('unshare: failed to execute /no/such: No such file or directory\n'), undefined, 'command not found is an exit code (127)');
  t.equal(setupFailure('ls: cannot access x\n'), undefined);
  t.equal(setupFailure(''), undefined);
});

t.test('the native supervisor\'s spec: NUL-ended pairs in a fixed vocabulary, the same facts as the argv', async (t) => {
  const items = (s: ShimSpec): string[] => {
    const text = nativeSpec(s);
    t.ok(text.endsWith('\0'), 'every string NUL-ended');
    return text.slice(0, -1).split('\0');
  };
  t.same(items({ ...base, paths: { ...base.paths, notify: '/run/tsnet/daemon.sock' } }), [
    'tsnet-supervise 1', 'id', 'c'.repeat(64), 'hostname', 'web1', 'cwd', '/', 'netns', '/run/tsnet/netns/web1',
    'state', '/r/state.json', 'stdout', '/l/stdout.log', 'stderr', '/l/stderr.log', 'notify', '/run/tsnet/daemon.sock',
    'bind', '/run/tsnet/c/files/0-etc-hosts', '/etc/hosts', 'env', 'PATH=/bin', 'env', 'A=x y=z', 'arg', '/bin/sleep', 'arg', '30',
  ]);
  const r = items({ ...base, rootfs: '/srv/root', netns: { kind: 'host' }, argv: ['sh', '-c', 'echo "a b"'] });
  t.same(r.slice(r.indexOf('rootfs'), r.indexOf('rootfs') + 2), ['rootfs', '/srv/root']);
  t.notOk(r.includes('netns'), 'host network: no netns to join');
  t.notOk(r.includes('notify'), 'no daemon socket given: none');
  t.same(r.slice(-6), ['arg', 'sh', 'arg', '-c', 'arg', 'echo "a b"'], 'arguments kept whole, in order');
  t.throws(() => nativeSpec({ ...base, tty: { cols: 80, rows: 24 } }), /terminal/, 'never for a terminal');
  t.throws(() => nativeSpec({ ...base, openStdin: true }), /stdin/, 'nor for open stdin');
});
