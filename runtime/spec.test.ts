import t from 'tap';
import { parseContainerName, parseContainerRecord, parseContainerSpec, parseShimState } from './spec.js';

t.test('container spec: defaults and validation', async (t) => {
  const s = parseContainerSpec({ argv: ['/bin/sleep', '1'], netns: { kind: 'host' } });
  t.same(s, { argv: ['/bin/sleep', '1'], netns: { kind: 'host' }, env: {}, cwd: '/', files: {}, labels: {}, autoRemove: false, tty: false, openStdin: false, init: false, config: {} });
  const full = parseContainerSpec({
    id: 'a'.repeat(64), name: 'web.1_x-y', hostname: 'web-1.example', argv: ['x'], env: { A: '1', 'weird.key': 'v=w' },
    cwd: '/srv', rootfs: '/var/lib/r', netns: { kind: 'path', path: '/run/tsnet/netns/c1' },
    files: { '/etc/hosts': { content: '127.0.0.1 localhost\n' }, '/etc/resolv.conf': { hostPath: '/run/x/resolv.conf' } },
    labels: { a: 'b' }, autoRemove: true,
  });
  t.equal(full.name, 'web.1_x-y');
  t.same(full.files['/etc/resolv.conf'], { hostPath: '/run/x/resolv.conf' });
  const bad: [unknown, RegExp][] = [
    [{ argv: [], netns: { kind: 'host' } }, /needs a command/],
    [{ argv: ['x'] }, /netns/],
    [{ argv: ['x'], netns: { kind: 'path', path: 'relative' } }, /absolute path/],
    [{ argv: ['x'], netns: { kind: 'host' }, name: '-bad' }, /name/],
    [{ argv: ['x'], netns: { kind: 'host' }, name: 'a b' }, /name/],
    [{ argv: ['x'], netns: { kind: 'host' }, id: 'ABC' }, /64 lowercase hex/],
    [{ argv: ['x'], netns: { kind: 'host' }, hostname: '-h' }, /host name/],
    [{ argv: ['x'], netns: { kind: 'host' }, hostname: 'a'.repeat(65) }, /host name/],
    [{ argv: ['x'], netns: { kind: 'host' }, hostname: 'a_b' }, /host name/],
    [{ argv: ['x'], netns: { kind: 'host' }, env: { 'A=B': '1' } }, /env\["A=B"\]/],
    [{ argv: ['x\0y'], netns: { kind: 'host' } }, /NUL/],
    [{ argv: ['x'], netns: { kind: 'host' }, cwd: '/a/../b' }, /absolute path/],
    [{ argv: ['x'], netns: { kind: 'host' }, files: { '/etc/my hosts': { content: '' } } }, /files\["\/etc\/my hosts"\]/],
    [{ argv: ['x'], netns: { kind: 'host' }, files: { 'etc/hosts': { content: '' } } }, /files\["etc\/hosts"\]/],
    [{ argv: ['x'], netns: { kind: 'host' }, files: { '/etc/hosts': { content: '', hostPath: '/x' } } }, /files/],
    [{ argv: ['x'], netns: { kind: 'host' }, detach: true }, /detach/],
  ];
  for (const [raw, re] of bad) t.throws(() => parseContainerSpec(raw), { code: 'INVALID_CONFIG', message: re }, JSON.stringify(raw));
});

t.test('container names follow Docker', async (t) => {
  for (const ok of ['a', 'A1', 'web_1.x-y', '9']) t.equal(parseContainerName(ok), ok);
  for (const bad of ['', '_a', '.a', 'a/b', 'a b', 'ü', 'a'.repeat(254)]) t.throws(() => parseContainerName(bad), { code: 'INVALID_CONFIG' }, bad);
});

t.test('records and shim states are strict and versioned', async (t) => {
  const rec = {
    schemaVersion: 1, id: 'b'.repeat(64), name: 'c', hostname: 'h', argv: ['x'], env: {}, cwd: '/', rootfs: null,
    netns: { kind: 'host' }, files: {}, labels: {}, autoRemove: false, createdAt: '2024-01-01T00:00:00.000Z', status: 'created',
    pid: null, pidStartTime: null, bootId: null, startedAt: null, finishedAt: null, exitCode: null, error: null,
  };
  // A record written before the lifecycle fields existed reads with their defaults.
  t.same(parseContainerRecord(rec), { ...rec, tty: false, openStdin: false, init: false, config: {}, foreground: null, restartCount: 0 });
  t.throws(() => parseContainerRecord({ ...rec, schemaVersion: 2 }), { code: 'INTERNAL' });
  t.throws(() => parseContainerRecord({ ...rec, extra: 1 }), { code: 'INTERNAL' });
  t.throws(() => parseContainerRecord({ ...rec, status: 'paused' }), { code: 'INTERNAL' });
  t.throws(() => parseContainerRecord({ ...rec, exitCode: 256 }), { code: 'INTERNAL' });
  const st = { phase: 'running', shimPid: 5, shimStartTime: '9', pid: 6, pidStartTime: '10', startedAt: '2024-01-01T00:00:00.000Z', finishedAt: null, exitCode: null, error: null };
  t.same(parseShimState(st), st);
  t.throws(() => parseShimState({ ...st, phase: 'paused' }), { code: 'INTERNAL' });
});
