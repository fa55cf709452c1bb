/**
 * The `tsnet` binary (the C front end, cli/bin/front.c) in one isolated host: with a daemon, the
 * commands it can serve run there (its CLI service counts them) with the client's arguments,
 * environment, working directory, exit code, stdout/stderr apart and signals; a foreground container
 * whose client is killed is treated as after a killed Node client; what needs the client's own
 * stdin or terminal, another state directory, or no daemon at all runs in the Node CLI, with the
 * same results; a first `run` without a daemon starts it and is served by it.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TSNET_FRONT, cliFor, okCli } from '../helpers/cli.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';

interface Served { commands: number; local: number }
const served = async (host: IsolatedHost): Promise<Served> => {
  const s = JSON.parse(await okCli(cliFor(host, { frontEnd: false }))('daemon', '--status')) as { services: { cli: Served } };
  return s.services.cli;
};

/** The front end as a long-lived child in the isolated host (for signals), with its output. */
function frontEnd(host: IsolatedHost, args: string[]): { pid: () => number; out: () => string; until: (text: string, ms?: number) => Promise<void>; exit: Promise<number | null> } {
  const ns = host.ns.kind === 'path' ? host.ns.path : '/proc/self/ns/net';
  // nsenter execs the front end: its pid is the child's.
  const child = spawn('nsenter', [`--net=${ns}`, '--', TSNET_FRONT, '--state-dir', host.stateDir, '--run-dir', host.runDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  host.defer(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  return {
    pid: () => child.pid ?? -1,
    out: () => out,
    async until(text, ms = 15_000) {
      const end = Date.now() + ms;
      while (!out.includes(text)) {
        if (Date.now() > end) throw new Error(`no ${JSON.stringify(text)} within ${ms} ms: ${JSON.stringify(out)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    exit,
  };
}

t.test('the tsnet binary: served by the daemon when it can be, the Node CLI otherwise', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    await host.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const node = okCli(cliFor(host, { frontEnd: false }));
    const front = cliFor(host, { frontEnd: true });
    const ok = okCli(front);
    host.defer(async () => {
      for (const id of (await front('ps', '-aq')).stdout.split('\n').filter(Boolean)) await front('rm', '-f', id);
    });
    await node('network', 'create', '--subnet', '10.72.0.0/24', 'lab');

    host.defer(() => front('daemon', '--stop'));
    await t.test('without a daemon: the Node CLI, same results; a first run starts the daemon and is served by it', async (t) => {
      t.match(await ok('network', 'ls'), /\blab\b/);
      t.equal((await front('daemon', '--status')).code, 3, 'network ls ran in the Node CLI and started no daemon');
      const r = await front('run', '--rm', '--network', 'lab', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3');
      t.same(r, { code: 3, stdout: 'out\n', stderr: 'err\n' }, 'exit code, stdout and stderr apart');
      t.equal((await served(host)).commands, 1, 'the run started the daemon, which served it');
      const again = await okCli(cliFor(host, { frontEnd: false }))('daemon', '--start');
      t.match(again, /^already running: daemon \d+\n$/, 'daemon --start with one running: nothing more');
    });

    const before = await served(host);

    await t.test('served: arguments, environment, working directory, exit codes, output', async (t) => {
      const id = (await ok('run', '-d', '--name', 'box', '--network', 'lab', '--', 'sleep', '600')).trim();
      t.match(id, /^[0-9a-f]{64}$/, 'run -d prints the id');
      t.match(await ok('ps'), /\bbox\b/, 'ps shows it');
      t.same(await front('exec', 'box', 'sh', '-c', 'echo o; echo e >&2; exit 7'), { code: 7, stdout: 'o\n', stderr: 'e\n' }, 'exec: exit code, streams apart');
      const env = await front('run', '--rm', '--network', 'lab', '-e', 'FROM_CLIENT', '-e', 'SET=1', '--', 'sh', '-c', 'echo "$FROM_CLIENT $SET $(pwd)"');
      t.equal(env.code, 0);
      t.equal(env.stdout, ` 1 ${process.cwd()}\n`, '-e VAR of an unset variable is left out; the container starts in the client\'s directory');
      const r = await front('rm', 'nosuch');
      t.equal(r.code, 3, 'a failure\'s exit code (not found: 3)');
      t.match(r.stderr, /^Error: .*nosuch/, 'and its message on stderr');
      const bad = await front('run', '--bogus');
      t.equal(bad.code, 2, 'a bad flag: 2');
      t.match((await ok('exec', 'box', 'getent', 'hosts', 'box')).trim(), /^10\.72\.0\.\d+\s+box$/, 'the container\'s name resolves (the daemon\'s DNS)');
      const after = await served(host);
      t.equal(after.commands - before.commands, 7, 'the daemon served all seven');
    });

    await t.test('a signal to the client reaches a foreground container', async (t) => {
      const p = frontEnd(host, ['run', '--rm', '--name', 'trapper', '--network', 'lab', '--', 'sh', '-c', 'trap "echo got INT; exit 5" INT; echo ready; while :; do sleep 0.1; done']);
      await p.until('ready');
      process.kill(p.pid(), 'SIGINT');
      t.equal(await p.exit, 5, 'the container\'s exit code');
      t.match(p.out(), /got INT/, 'its trap ran');
      t.notMatch(await ok('ps', '-a'), /\btrapper\b/, '--rm removed it');
    });

    await t.test('the client killed: a foreground --rm container is removed as after a killed Node client', async (t) => {
      const p = frontEnd(host, ['run', '--rm', '--name', 'orphan', '--network', 'lab', '--', 'sh', '-c', 'echo ready; sleep 600']);
      await p.until('ready');
      const pid = (await ok('inspect', '-f', '{{.State.Pid}}', 'orphan')).trim();
      process.kill(p.pid(), 'SIGKILL');
      await p.exit;
      let gone = false;
      for (let i = 0; i < 50 && !gone; i++) {
        gone = !(await ok('ps', '-a')).includes('orphan'); // the next listing removes it
        if (!gone) await new Promise((r) => setTimeout(r, 100));
      }
      t.ok(gone, 'removed by the next ps');
      t.equal(await host.exec(['kill', '-0', pid]).then(() => 'alive', () => 'gone'), 'gone', 'its process is gone');
    });

    await t.test('what needs the client itself runs in the Node CLI', async (t) => {
      const local0 = (await served(host)).local;
      const ns = host.ns.kind === 'path' ? host.ns.path : '/proc/self/ns/net';
      const { run } = await import('../../sys/exec.js');
      const echo = await run(['nsenter', `--net=${ns}`, '--', TSNET_FRONT, '--state-dir', host.stateDir, '--run-dir', host.runDir, 'exec', '-i', 'box', 'cat'], { input: 'through stdin\n' });
      t.equal(echo.stdout, 'through stdin\n', 'exec -i reads the client\'s stdin');
      const other = join(host.stateDir, 'other');
      await mkdir(other, { recursive: true });
      t.match((await ok('--state-dir', other, 'network', 'ls')), /\bbridge\b/, 'another state directory: its own records');
      t.notMatch(await ok('--state-dir', other, 'network', 'ls'), /\blab\b/);
      t.equal((await served(host)).local - local0, 3, 'three commands answered "local"');
    });
  });
});
