/**
 * Containers as Docker users drive them, through the built CLI in one isolated host: an interactive
 * shell on a real pty (exec -it, run -it), a 40 s exec, signals to a foreground `run --rm`, its
 * client killed, start/stop/restart/kill releasing and restoring addresses, host ports and names,
 * --init, --filter/--format on ps and network ls, events in order.
 */
import t from 'tap';
import { TSNET_BIN, cliFor, okCli, type Cli } from '../helpers/cli.js';
import { snapshot } from '../helpers/host-snapshot.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';

interface Pty {
  onData(f: (d: string) => void): void;
  onExit(f: (e: { exitCode: number }) => void): void;
  write(d: string): void;
  resize(c: number, r: number): void;
  kill(sig?: string): void;
}
const loadPty = async (): Promise<{ spawn(file: string, args: string[], o: Record<string, unknown>): Pty }> => (await import('node-pty')) as never;

const SERVER = (port: number): string => `require('net').createServer(s=>s.end('hello from '+require('os').hostname()+'\\n')).listen(${port})`;
const LOOKUP = (name: string): string => `require('dns').lookup('${name}',(e,a)=>{console.log(e?'ERR '+e.code:a);process.exit(0)})`;

/** A CLI process on a pty, in the isolated host: its whole output, and a wait for some text. */
async function ptySession(host: IsolatedHost, args: string[], size = { cols: 80, rows: 24 }): Promise<{ pty: Pty; out: () => string; until: (re: RegExp, ms?: number) => Promise<string>; exit: Promise<number> }> {
  const pty = await loadPty();
  const p = pty.spawn('nsenter', [`--net=${host.ns.kind === 'path' ? host.ns.path : '/proc/self/ns/net'}`, '--', process.execPath, TSNET_BIN, ...args], {
    name: 'xterm', cols: size.cols, rows: size.rows, cwd: '/',
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', TSNET_STATE_DIR: host.stateDir, TSNET_RUN_DIR: host.runDir, TSNET_DNS_UPSTREAM: '127.0.0.1:9' },
  });
  let buf = '';
  const waiters: (() => void)[] = [];
  p.onData((d) => {
    buf += d;
    for (const w of waiters.splice(0)) w();
  });
  const exit = new Promise<number>((r) => p.onExit((e) => r(e.exitCode)));
  const until = async (re: RegExp, ms = 15_000): Promise<string> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = re.exec(buf);
      if (m) return m[0];
      if (Date.now() > deadline) throw new Error(`pty: no ${re} within ${ms} ms; got ${JSON.stringify(buf.slice(-400))}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 200);
      });
    }
  };
  return { pty: p, out: () => buf, until, exit };
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const state = async (ok: (...a: string[]) => Promise<string>, name: string): Promise<string> => (await ok('inspect', '-f', '{{.State.Status}}', name)).trim();

t.test('containers as Docker users expect them', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    await host.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const cli: Cli = cliFor(host);
    const ok = okCli(cli);
    host.defer(async () => {
      for (const id of (await cli('ps', '-aq')).stdout.split('\n').filter(Boolean)) await cli('rm', '-f', id);
      await cli('daemon', '--stop');
    });
    await ok('network', 'create', '--subnet', '10.71.0.0/24', 'lab');
    await ok('run', '-d', '--name', 'box', '--network', 'lab', '--', 'sleep', '600');
    const baseline = await snapshot(host);

    // Started first, checked last: an exec that outlives the old 30 s limit.
    const t40 = Date.now();
    // In a Node client of its own: the metrics test below stops and replaces the daemon meanwhile,
    // and a stopping daemon finishes the commands it serves first (this one for 40 s).
    const long = cliFor(host, { frontEnd: false })('exec', 'box', 'sh', '-c', 'sleep 40; echo slept');

    await t.test('exec -it: an interactive shell on a real pty, resized, with its exit code', async (t) => {
      const s = await ptySession(host, ['exec', '-it', 'box', 'sh']);
      s.pty.write('echo hello-$((40+2))\r');
      t.equal(await s.until(/hello-42/), 'hello-42', 'a typed command runs and its output comes back');
      s.pty.write('stty size\r');
      t.equal(await s.until(/24 80/), '24 80', 'the terminal has the client\'s size');
      s.pty.resize(100, 30);
      await new Promise((r) => setTimeout(r, 300));
      s.pty.write('stty size\r');
      t.equal(await s.until(/30 100/), '30 100', 'a resize of the client\'s window reaches the container\'s terminal');
      s.pty.write('tty\r');
      t.match(await s.until(/\/dev\/pts\/\d+/), /^\/dev\/pts\/\d+$/, 'stdin is a terminal inside');
      s.pty.write('exit 7\r');
      t.equal(await s.exit, 7, 'the shell\'s exit code is exec\'s');
    });

    await t.test('run -it --rm: a shell in a new container, its exit code, nothing left', async (t) => {
      const s = await ptySession(host, ['run', '-it', '--rm', '--name', 'sh1', '--network', 'lab', '--', 'sh']);
      s.pty.write('echo $((6*7))-$(hostname)\r');
      t.match(await s.until(/42-[0-9a-f]{12}/), /^42-[0-9a-f]{12}$/, 'the shell runs in the container (its own host name)');
      s.pty.write('exit 3\r');
      t.equal(await s.exit, 3, 'exit code passed through');
      t.same(await snapshot(host), baseline, 'removed with its sandbox');
    });

    await t.test('run -i and exec -i forward stdin', async (t) => {
      const r1 = await host.exec(['sh', '-c', `printf 'a\\nb\\n' | env TSNET_STATE_DIR=${host.stateDir} TSNET_RUN_DIR=${host.runDir} ${process.execPath} ${TSNET_BIN} run -i --rm --network lab -- wc -l`]);
      t.equal(r1.stdout.trim(), '2', 'run -i: the container read the piped lines');
      const r2 = await host.exec(['sh', '-c', `echo piped | env TSNET_STATE_DIR=${host.stateDir} TSNET_RUN_DIR=${host.runDir} ${process.execPath} ${TSNET_BIN} exec -i box cat`]);
      t.equal(r2.stdout, 'piped\n', 'exec -i: cat echoes stdin');
      t.equal((await cli('exec', 'box', 'cat')).stdout, '', 'without -i stdin is empty');
      t.equal((await ok('exec', '-u', 'nobody', 'box', 'id', '-u')).trim(), '65534', 'exec -u NAME resolves in the container\'s passwd');
      t.equal((await ok('exec', '-u', '1234:5678', 'box', 'sh', '-c', 'echo $(id -u):$(id -g)')).trim(), '1234:5678', 'exec -u UID:GID');
      await ok('exec', '-d', 'box', 'sh', '-c', 'echo bg > /tmp/tsnet-exec-d');
      await waitFor('exec -d output', async () => (await cli('exec', 'box', 'cat', '/tmp/tsnet-exec-d')).stdout === 'bg\n');
      t.pass('exec -d ran in the background');
    });

    await t.test('SIGINT to a foreground run --rm: forwarded, the container ends, nothing left', async (t) => {
      const p = host.spawnIn(host.ns, ['env', `TSNET_STATE_DIR=${host.stateDir}`, `TSNET_RUN_DIR=${host.runDir}`, 'TSNET_DNS_UPSTREAM=127.0.0.1:9', process.execPath, TSNET_BIN, 'run', '--rm', '--init', '--name', 'fg', '--network', 'lab', '--', 'sleep', '60']);
      await waitFor('fg running', async () => (await cli('inspect', '-f', '{{.State.Status}}', 'fg')).stdout.trim() === 'running');
      const exited = new Promise<number | null>((r) => p.child.once('exit', (c) => r(c)));
      p.child.kill('SIGINT');
      t.equal(await exited, 130, 'the client exits with the container\'s code: 128 + SIGINT');
      t.same(await snapshot(host), baseline, 'no namespace, veth, address, reservation or record left');
      t.notMatch((await host.exec(['ps', '-eo', 'args'])).stdout, /sleep 60$/m, 'no process left');
    });

    await t.test('the client of a foreground run --rm killed with SIGKILL: nothing left after the next command', async (t) => {
      const p = host.spawnIn(host.ns, ['env', `TSNET_STATE_DIR=${host.stateDir}`, `TSNET_RUN_DIR=${host.runDir}`, 'TSNET_DNS_UPSTREAM=127.0.0.1:9', process.execPath, TSNET_BIN, 'run', '--rm', '--name', 'orphan', '--network', 'lab', '--', 'sleep', '61']);
      await waitFor('orphan running', async () => (await cli('inspect', '-f', '{{.State.Status}}', 'orphan')).stdout.trim() === 'running');
      p.child.kill('SIGKILL');
      await p.close(2000);
      t.notMatch(await ok('ps', '-a'), /orphan/, 'the next command removed it');
      t.same(await snapshot(host), baseline, 'nothing of it left');
      t.notMatch((await host.exec(['ps', '-eo', 'args'])).stdout, /sleep 61$/m, 'its process is gone');
    });

    await t.test('stop releases addresses, host ports and names; start brings them back; kill and restart', async (t) => {
      await ok('run', '-d', '--init', '--name', 'web', '--network', 'lab', '--ip', '10.71.0.50', '--network-alias', 'www', '-p', '18080:80', '--', 'node', '-e', SERVER(80));
      await ok('run', '-d', '--init', '--name', 'dyn', '--network', 'lab', '--', 'sleep', '600');
      await ok('run', '-d', '--name', 'client', '--network', 'lab', '--', 'sleep', '600');
      const lookup = async (name: string): Promise<string> => (await ok('exec', 'client', 'node', '-e', LOOKUP(name))).trim();
      t.equal(await lookup('web'), '10.71.0.50', 'web resolves, at its static address');
      t.equal(await lookup('www'), '10.71.0.50', 'and its alias');
      t.match(await ok('port', 'web'), /80\/tcp -> 0\.0\.0\.0:18080/, 'its port is published');
      const dynIp = (await ok('inspect', '-f', '{{.NetworkSettings.Networks.lab.IPAddress}}', 'dyn')).trim();

      await ok('stop', 'web', 'dyn');
      t.equal(await state(ok, 'web'), 'exited', 'stopped');
      t.equal((await ok('inspect', '-f', '{{.NetworkSettings.Networks.lab.IPAddress}}|{{.HostConfig.NetworkMode}}|{{json .HostConfig.PortBindings}}', 'web')).trim(),
        '|lab|{"80/tcp":[{"HostIp":"","HostPort":"18080"}]}', 'a stopped container has no address; its settings are kept');
      t.match(await lookup('web'), /^ERR /, 'its name no longer resolves');
      t.match(await lookup('www'), /^ERR /, 'nor its alias');
      const net = JSON.parse(await ok('network', 'inspect', 'lab'))[0] as { Containers: Record<string, { Name: string }> };
      t.notOk(Object.values(net.Containers).some((c) => c.Name === 'web'), 'it left the network');
      await ok('run', '-d', '--name', 'squatter', '--network', 'lab', '--ip', '10.71.0.51', '-p', '18080:80', '--', 'sleep', '600');
      t.pass('its host port is free for another container');
      const refused = await cli('start', 'web');
      t.not(refused.code, 0, 'start while another container holds its port fails');
      t.match(refused.stderr, /18080.*squatter|squatter.*18080/s, 'and the message says who holds the port');
      t.equal(await state(ok, 'web'), 'exited', 'web stays stopped');
      await ok('rm', '-f', 'squatter');

      await ok('start', 'web', 'dyn');
      t.equal(await state(ok, 'web'), 'running', 'started again');
      t.equal(await lookup('web'), '10.71.0.50', 'static address kept, name back');
      t.equal(await lookup('www'), '10.71.0.50', 'alias back');
      t.match(await ok('port', 'web'), /80\/tcp -> 0\.0\.0\.0:18080/, 'port published again');
      const dynIp2 = (await ok('inspect', '-f', '{{.NetworkSettings.Networks.lab.IPAddress}}', 'dyn')).trim();
      t.match(dynIp2, /^10\.71\.0\.\d+$/, `a dynamic address again (was ${dynIp}, now ${dynIp2})`);
      t.equal((await ok('inspect', '-f', '{{.RestartCount}}', 'web')).trim(), '1', 'RestartCount counts the start');

      await ok('kill', '-s', 'TERM', 'web');
      await waitFor('web exited', async () => (await state(ok, 'web')) === 'exited');
      t.match(await ok('ps', '-a', '--filter', 'name=web', '--format', '{{.Status}}'), /^Exited \(143\) /, 'kill -s TERM: Exited (143), in Docker\'s words');
      t.match(await lookup('web'), /^ERR /, 'an exited container is out of DNS too');
      await ok('restart', 'web');
      t.equal(await lookup('web'), '10.71.0.50', 'restart: running and resolvable again');
      t.match(await ok('ps', '--filter', 'name=web', '--format', '{{.Status}}'), /^Up /, 'ps: Up ...');
      const killed = await cli('kill', 'nosuch');
      t.equal(killed.code, 3, 'kill of an unknown container: not found');
      const wait = cli('wait', 'dyn');
      await ok('kill', 'dyn');
      t.equal((await wait).stdout.trim(), '137', 'wait prints the exit code of a SIGKILLed container');
      await ok('rm', '-f', 'web', 'dyn', 'client');
      t.same(await snapshot(host), baseline, 'after rm: as before');
    });

    await t.test('--init: stop of a PID-1 program that ignores SIGTERM is immediate', async (t) => {
      await ok('run', '-d', '--init', '--name', 'quick', '--network', 'lab', '--', 'sleep', '600');
      await ok('run', '-d', '--name', 'stubborn', '--network', 'lab', '--', 'sleep', '600');
      const t0 = Date.now();
      await ok('stop', 'quick');
      const withInit = Date.now() - t0;
      const t1 = Date.now();
      await ok('stop', '-t', '2', 'stubborn');
      const without = Date.now() - t1;
      t.comment(`stop with --init: ${withInit} ms; without, sleep as PID 1 (SIGTERM ignored), -t 2: ${without} ms`);
      t.ok(withInit < 9_000, 'with --init: stopped before the 10 s timeout would fire');
      t.ok(without >= 2_000, 'without: only the SIGKILL after the timeout stops it');
      t.equal((await ok('inspect', '-f', '{{.State.ExitCode}}', 'quick')).trim(), '143', 'tini passes on the signal\'s exit code');
      await ok('rm', 'quick', 'stubborn');
    });

    await t.test('ps and network ls: every --filter, --format forms, errors naming the unknown', async (t) => {
      await ok('network', 'create', '--label', 'tier=db', 'empty');
      await ok('run', '-d', '--name', 'f1', '--network', 'lab', '-l', 'app=one', '-l', 'tier=web', '--', 'sleep', '600');
      await ok('run', '-d', '--name', 'f2', '--network', 'empty', '-l', 'app=two', '--', 'sleep', '600');
      t.equal((await cli('run', '--name', 'f3', '--network', 'lab', '--', 'sh', '-c', 'exit 4')).code, 4, 'a foreground run exits with its container\'s code');
      const names = async (...args: string[]): Promise<string[]> => (await ok('ps', ...args, '--format', '{{.Names}}')).split('\n').filter(Boolean).filter((n) => n !== 'box').sort();
      t.same(await names('--filter', 'name=f1'), ['f1'], 'name');
      t.same(await names('-f', 'name=f1', '-f', 'name=f2'), ['f1', 'f2'], 'the same key twice: either');
      t.same(await names('-f', 'label=app'), ['f1', 'f2'], 'label=KEY');
      t.same(await names('-f', 'label=app=one'), ['f1'], 'label=KEY=VALUE');
      t.same(await names('-f', 'label=app', '-f', 'label=tier=web'), ['f1'], 'two labels: both');
      t.same(await names('-f', 'network=empty'), ['f2'], 'network by name');
      t.same(await names('-a', '-f', 'status=exited'), ['f3'], 'status=exited');
      t.same(await names('-f', 'exited=4'), ['f3'], 'exited=CODE (implies -a)');
      t.same(await names('-f', 'name=f', '-f', 'network=lab'), ['f1'], 'different keys: all');
      const id = (await ok('inspect', '-f', '{{.Id}}', 'f2')).trim();
      t.same(await names('-f', `id=${id.slice(0, 8)}`), ['f2'], 'id prefix');
      const json = (await ok('ps', '-f', 'name=f1', '--format', 'json')).trim();
      t.same(Object.keys(JSON.parse(json) as object).sort(), ['Command', 'CreatedAt', 'ID', 'Image', 'Labels', 'LocalVolumes', 'Mounts', 'Names', 'Networks', 'Ports', 'RunningFor', 'Size', 'State', 'Status'], '--format json: docker ps\'s keys, one object per line');
      t.match(await ok('ps', '-f', 'name=f1', '--format', '{{.Label "app"}} {{.State}} {{.Command}}'), /^one running "sleep 600"\n$/, '.Label "KEY", .State, .Command as Docker quotes it');
      t.match(await ok('ps', '-f', 'name=f1', '--format', 'table {{.Names}}\t{{.Labels}}'), /^NAMES +LABELS\nf1 +app=one,tier=web\n$/, 'table TEMPLATE: header and row');
      const bad = await cli('ps', '--filter', 'colour=red');
      t.equal(bad.code, 2, 'unknown filter: invalid input');
      t.match(bad.stderr, /invalid filter 'colour'/, 'the message names it');
      t.match((await cli('ps', '--format', '{{.Nope}}')).stderr, /can't evaluate field Nope/, 'unknown field named');
      t.match((await cli('ps', '-f', 'status=sleepy')).stderr, /invalid filter 'status=sleepy'/, 'bad status value named');
      t.equal((await ok('network', 'ls', '--filter', 'dangling=true', '--format', '{{.Name}}')).trim(), '', 'dangling: every user network has a container');
      await ok('rm', '-f', 'f2');
      t.equal((await ok('network', 'ls', '--filter', 'dangling=true', '--format', '{{.Name}}')).trim(), 'empty', 'dangling=true: the unused user network');
      t.same((await ok('network', 'ls', '-f', 'type=builtin', '--format', '{{.Name}}')).split('\n').filter(Boolean), ['bridge', 'host', 'none'], 'type=builtin');
      t.same((await ok('network', 'ls', '-f', 'driver=bridge', '-f', 'type=custom', '--format', '{{.Name}}')).split('\n').filter(Boolean), ['empty', 'lab'], 'driver and type');
      t.equal((await ok('network', 'ls', '-f', 'label=tier=db', '--format', '{{.Name}} {{.Label "tier"}}')).trim(), 'empty db', 'label filter and .Label');
      t.same(Object.keys(JSON.parse((await ok('network', 'ls', '-f', 'name=lab', '--format', 'json')).trim()) as object).sort(), ['CreatedAt', 'Driver', 'ID', 'IPv6', 'Internal', 'Labels', 'Name', 'Scope'], 'network ls json keys');
      t.equal((await ok('network', 'inspect', '-f', '{{range .IPAM.Config}}{{.Subnet}}{{end}} {{.Driver}}', 'lab')).trim(), '10.71.0.0/24 bridge', 'network inspect --format');
      t.match((await cli('network', 'ls', '-f', 'flavour=x')).stderr, /invalid filter 'flavour'/, 'network ls: unknown filter named');
      await ok('rm', '-f', 'f1', 'f3');
      await ok('network', 'rm', 'empty');
    });

    await t.test('events: run, stop, rm of a container, in order, in Docker\'s shape', async (t) => {
      const since = String(Date.now() / 1000);
      await ok('run', '-d', '--name', 'evt', '--network', 'lab', '--', 'sleep', '600');
      await ok('stop', '-t', '0', 'evt');
      await ok('rm', 'evt');
      const lines = (await ok('events', '--since', since, '--until', '0s', '--filter', 'container=evt', '--format', '{{.Type}} {{.Action}} {{.Actor.Attributes.name}}')).split('\n').filter(Boolean);
      t.same(lines, ['container create evt', 'container start evt', 'container kill evt', 'container die evt', 'container stop evt', 'container destroy evt'], 'container events in order');
      const net = (await ok('events', '--since', since, '--until', '0s', '--filter', 'type=network', '--filter', 'network=lab', '--format', '{{.Action}}')).split('\n').filter(Boolean);
      t.same(net, ['connect', 'disconnect'], 'the endpoint\'s network events');
      const json = JSON.parse((await ok('events', '--since', since, '--until', '0s', '--filter', 'event=die', '--format', 'json')).trim()) as Record<string, unknown>;
      t.same(Object.keys(json).sort(), ['Action', 'Actor', 'Type', 'id', 'scope', 'status', 'time', 'timeNano'], 'docker events keys');
      t.match(json, { Type: 'container', Action: 'die', scope: 'local', Actor: { Attributes: { name: 'evt', exitCode: '137' } } }, 'die carries the exit code');
      t.match(await ok('events', '--since', since, '--until', '0s', '-f', 'event=start'), /^\d{4}-\d\d-\d\dT[\d:.]+Z container start [0-9a-f]{64} \(name=evt\)\n$/, 'the default line, as docker events prints it');
      t.match((await cli('events', '--until', '0s', '-f', 'type=volume')).stderr, /invalid filter 'type=volume'/, 'unknown type named');
    });

    await t.test('the daemon\'s Prometheus metrics, scraped and parsed', async (t) => {
      await cli('daemon', '--stop');
      await waitFor('no daemon', async () => (await cli('daemon', '--status')).code !== 0);
      const d = host.spawnIn(host.ns, ['env', `TSNET_STATE_DIR=${host.stateDir}`, `TSNET_RUN_DIR=${host.runDir}`, process.execPath, TSNET_BIN, 'daemon', '--upstream', '127.0.0.1:9', '--metrics-address', '127.0.0.1:19323']);
      host.defer(() => d.close(3000));
      await waitFor('daemon ready', async () => (await cli('daemon', '--status')).code === 0, 30_000);
      await ok('exec', 'box', 'node', '-e', LOOKUP('box'));
      const scrape = async (): Promise<string> => (await host.exec([process.execPath, '-e', "require('http').get('http://127.0.0.1:19323/metrics',r=>{let d='';r.on('data',c=>d+=c).on('end',()=>process.stdout.write(r.statusCode+'\\n'+d))})"])).stdout;
      let text = '';
      await waitFor('a DNS query counted', async () => /^tsnet_dns_queries_total [1-9]/m.test(text = await scrape()));
      const [status, ...body] = text.split('\n');
      t.equal(status, '200', 'GET /metrics answers');
      const samples = new Map(body.filter((l) => l !== '' && !l.startsWith('#')).map((l) => [l.slice(0, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1))]));
      t.ok(body.some((l) => l === '# TYPE tsnet_dns_queries_total counter'), 'Prometheus text format with TYPE lines');
      t.ok((samples.get('tsnet_dns_queries_total') ?? 0) >= 1, 'DNS queries counted');
      t.equal(samples.get('tsnet_containers{state="running"}'), 1, 'one running container (box)');
      t.equal(samples.get('tsnet_networks{driver="bridge"}'), 2, 'two bridge networks (bridge, lab)');
      for (const m of ['tsnet_cni_requests_total', 'tsnet_firewall_repairs_total', 'tsnet_dns_answers_cached_total']) t.ok(samples.has(m), `${m} present`);
    });

    const r = await long;
    t.equal(r.code, 0, 'exec of a 40 s command: exit code 0');
    t.equal(r.stdout, 'slept\n', 'and its output');
    t.ok(Date.now() - t40 >= 40_000, `it ran its 40 s (${Math.round((Date.now() - t40) / 1000)} s)`);
  });
});
