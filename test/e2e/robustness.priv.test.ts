/**
 * tsnet on a bad day (issue #12), through the built CLI in an isolated host, real kernel objects and
 * packets:
 * - the daemon killed with SIGKILL: names answer again and a flushed ruleset is back with no tsnet
 *   command typed (its watchdog restarts it; the time it took is printed); `doctor` fails, naming
 *   the fix, while the daemon DNS needs is stopped;
 * - records that do not parse (a half-written container record, garbage in a network record, in the
 *   engine record): set aside and reported, never in the way of commands on other objects; `rm -f`
 *   and `network rm` of the broken object remove its kernel objects and the record; `doctor` fails
 *   naming the fix;
 * - 50 `tsnet run -d` at once on one network all succeed, each with its own address.
 */
import t from 'tap';
import { readFile, writeFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { cliFor, okCli, type Cli } from '../helpers/cli.js';
import { containers, fromCtr, internet } from '../helpers/coexist.js';
import { dnsTool } from '../helpers/dns-tool-run.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';
import { request, retry } from '../helpers/traffic.js';

const tool = await dnsTool('dns-tool-robust');
t.teardown(() => tool.remove());

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const recordPath = (host: IsolatedHost, collection: string, id: string): string => join(host.stateDir, 'records', collection, `${id}.json`);
const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);
const links = async (host: IsolatedHost): Promise<string[]> => (JSON.parse((await host.exec(['ip', '-json', 'link', 'show'])).stdout) as { ifname: string }[]).map((l) => l.ifname);
/** `tsnet CMD... --format {{.Id}} REF`: the full id of a container or network. */
const idOf = async (cli: Cli, cmd: readonly string[], ref: string): Promise<string> => (await okCli(cli)(...cmd, '--format', '{{.Id}}', ref)).trim();
const daemonPid = async (cli: Cli): Promise<number | undefined> => {
  const r = await cli('daemon', '--status');
  return r.code === 0 ? (JSON.parse(r.stdout) as { pid: number }).pid : undefined;
};

t.test('the daemon killed: names and a flushed ruleset come back with no command typed', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cli = cliFor(host);
    const ok = okCli(cli);
    host.defer(() => cli('rm', '-f', 'a', 'b'));
    host.defer(() => cli('daemon', '--stop'));
    const inet = await internet(host);
    await containers(cli);
    t.match(await retry(fromCtr(cli, 'a', 'b', 80, 'name')), /^hello name from/, 'premise: a reaches b by name');
    t.match(await retry(() => request(inet, 'tcp', '192.168.60.1', 8080, 'pub', 1000)), /^hello pub/, 'premise: b\'s published port answers a neighbour');
    const aNs = JSON.parse(await ok('inspect', '--format', '{{json .NetworkSettings.SandboxKey}}', 'a')) as string;
    const nsA = { kind: 'path', path: aNs } as const;
    const askB = async (): Promise<string[]> => {
      const [r] = await tool.ask(nsA, '10.61.0.1', [{ name: 'b', type: 'A' }], 300);
      return (r?.answers ?? []).map((x) => x.data);
    };
    const bIp = (await askB())[0];
    t.match(bIp, /^10\.61\.0\.\d+$/, 'premise: the embedded DNS answers for b from a\'s namespace');

    const first = await daemonPid(cli);
    t.ok(first !== undefined && first > 1, `the daemon runs (pid ${first})`);
    // The daemon dies hard, and someone flushes the whole ruleset while it is gone.
    await host.exec(['kill', '-9', String(first)]);
    await host.exec(['nft', 'flush', 'ruleset']);
    const t0 = Date.now();
    // From here, no tsnet command: only the kernel and the network are asked.
    let names = false;
    let rules = false;
    let published = false;
    for (let i = 0; i < 200 && !(names && rules && published); i++) {
      if (!names) names = (await askB().catch((): string[] => [])).includes(bIp ?? '');
      if (!rules) rules = (await host.exec(['nft', 'list', 'tables'])).stdout.includes('tsnet');
      if (!published) published = /^hello pub/.test(await request(inet, 'tcp', '192.168.60.1', 8080, 'pub', 300).catch(() => ''));
      if (!(names && rules && published)) await sleep(50);
    }
    const took = Date.now() - t0;
    t.ok(names, 'b\'s name answers again');
    t.ok(rules, 'tsnet\'s tables are back in the kernel');
    t.ok(published, 'b\'s published port answers the neighbour again');
    t.comment(`names, rules and the published port back ${took} ms after kill -9 and nft flush ruleset (issue #12: within 5 s)`);
    const second = await daemonPid(cli);
    t.ok(second !== undefined && second !== first, `a new daemon runs (pid ${second})`);
    t.match(await retry(fromCtr(cli, 'a', 'b', 80, 'name')), /^hello name from/, 'a reaches b by name through the new daemon');

    // Stopped on purpose (its watchdog ends with it): doctor fails and names the fix.
    await ok('daemon', '--stop');
    for (let i = 0; i < 100 && (await daemonPid(cli)) !== undefined; i++) await sleep(50);
    const doc = await cli('doctor');
    t.not(doc.code, 0, 'doctor exits non-zero while the daemon DNS-enabled networks need is down');
    t.match(doc.stdout + doc.stderr, /the tsnet daemon is not running: containers on lab get no answer to names/, 'and says what it costs');
    t.match(doc.stdout + doc.stderr, /tsnet daemon --install-unit/, 'and names the fix');
  });
});

t.test('records that do not parse: set aside, reported, never in the way; rm -f and network rm remove what they described', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cli = cliFor(host);
    const ok = okCli(cli);
    host.defer(() => cli('rm', '-f', 'good', 'broken', 'later', 'after-engine'));
    host.defer(() => cli('daemon', '--stop'));
    await ok('network', 'create', '--subnet', '10.71.0.0/24', 'keep');
    await ok('network', 'create', '--subnet', '10.72.0.0/24', '-o', 'com.docker.network.bridge.name=brgone', 'gone');
    await ok('run', '-d', '--name', 'good', '--network', 'keep', '--', 'sleep', '600');
    await ok('run', '-d', '--name', 'broken', '--network', 'keep', '-p', '9090:80', '--', 'sleep', '600');
    const brokenId = await idOf(cli, ['inspect'], 'broken');
    const goneId = await idOf(cli, ['network', 'inspect'], 'gone');
    t.ok(brokenId.length === 64 && goneId.length === 64, 'premise: the ids');
    const brokenNetns = `tsnet-${brokenId.slice(0, 12)}`;
    const hostVeths = async (): Promise<string[]> => (await links(host)).filter((l) => l.startsWith('veth')).sort();
    const vethsBefore = await hostVeths();
    t.equal(vethsBefore.length, 2, 'premise: two containers, two host-side veths');
    t.match((await host.exec(['nft', 'list', 'ruleset'])).stdout, /\b9090\b/, 'premise: broken\'s published port is in the ruleset');

    // A half-written container record (the process died mid-write on a filesystem without rename).
    const cPath = recordPath(host, 'containers', brokenId);
    const text = await readFile(cPath, 'utf8');
    await writeFile(cPath, text.slice(0, Math.floor(text.length / 2)));
    // Garbage in a network record.
    await writeFile(recordPath(host, 'networks', goneId), '\u0000\u0001 not json {{{');

    const ps = await cli('ps', '-a');
    t.equal(ps.code, 0, `ps -a works (${ps.stderr.trim()})`);
    t.match(ps.stdout, /\bgood\b/, 'and lists the healthy container');
    t.match(ps.stderr, new RegExp(`container ${brokenId.slice(0, 12)}: its record could not be read .*tsnet rm -f ${brokenId}`), 'and reports the broken one with the fix');
    t.ok(await exists(join(host.stateDir, 'corrupt', 'containers', `${brokenId}.json`)), 'the record is set aside under STATE/corrupt/, kept for inspection');
    t.equal((await cli('inspect', 'good')).code, 0, 'inspect of a healthy container works');
    const nls = await cli('network', 'ls');
    t.equal(nls.code, 0, 'network ls works');
    t.match(nls.stdout, /\bkeep\b/, 'and lists the healthy network');
    await ok('run', '-d', '--name', 'later', '--network', 'keep', '--', 'sleep', '600');
    t.pass('run of a new container works');
    const doc = await cli('doctor');
    t.not(doc.code, 0, 'doctor fails while records are broken');
    t.match(doc.stdout + doc.stderr, new RegExp(`container ${brokenId.slice(0, 12)}: its record could not be read .*tsnet rm -f ${brokenId}`), 'doctor names the container fix');
    t.match(doc.stdout + doc.stderr, new RegExp(`network ${goneId.slice(0, 12)}: its record could not be read .*tsnet network rm ${goneId}`), 'and the network fix');

    // The fixes: by name (the name index still knows it) and by id.
    await ok('rm', '-f', 'broken');
    t.notOk((await ok('ps', '-a')).includes('broken'), 'rm -f removed the broken container');
    t.notOk(await exists(cPath), 'its record is gone');
    t.notOk(await exists(join(host.stateDir, 'corrupt', 'containers', `${brokenId}.json`)), 'and the set-aside copy');
    t.notOk((await host.exec(['ip', 'netns', 'list'])).stdout.includes(brokenNetns) || (await readdir(join(host.runDir, 'netns')).catch((): string[] => [])).includes(brokenNetns), 'its namespace is gone');
    t.equal((await hostVeths()).length, 2, 'its veth is gone (good\'s and later\'s remain)');
    t.notMatch((await host.exec(['nft', 'list', 'ruleset'])).stdout, /\b9090\b/, 'its published port\'s rules are gone');
    await ok('run', '-d', '--name', 'broken', '--network', 'keep', '-p', '9090:80', '--', 'sleep', '600');
    t.pass('its name and host port are free again');
    t.ok((await links(host)).includes('brgone'), 'premise: the broken network\'s bridge is still there');
    await ok('network', 'rm', goneId);
    t.notOk((await links(host)).includes('brgone'), 'network rm ID removed its bridge, found by its owner tag');
    t.notOk(await exists(recordPath(host, 'networks', goneId)), 'and its record');
    t.notOk(await exists(join(host.stateDir, 'corrupt', 'networks', `${goneId}.json`)), 'and the set-aside copy');
    const clean = await cli('doctor');
    t.notMatch(clean.stdout, /could not be read/, 'doctor: nothing broken any more');

    // Garbage in the engine record: made anew with the scope this store's objects carry.
    await writeFile(recordPath(host, 'engine', 'engine'), 'garbage');
    const ps2 = await cli('ps', '-a');
    t.equal(ps2.code, 0, 'ps -a works with a broken engine record');
    t.match(ps2.stdout, /\bgood\b/);
    await ok('run', '-d', '--name', 'after-engine', '--network', 'keep', '--', 'sleep', '600');
    t.pass('run works');
    t.match((await cli('doctor')).stdout, /the engine record could not be read and was made anew/, 'doctor says so');
    await ok('rm', '-f', 'good', 'broken', 'later', 'after-engine');
    const keepBridge = `br-${(await idOf(cli, ['network', 'inspect'], 'keep')).slice(0, 12)}`;
    t.ok((await links(host)).includes(keepBridge), 'premise: keep\'s bridge');
    await ok('network', 'rm', 'keep');
    t.notOk((await links(host)).includes(keepBridge), 'a network made before still is this store\'s: network rm removes its bridge');
  });
});

t.test('50 tsnet run -d at once on one network: all succeed, each with its own address', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cli = cliFor(host);
    const ok = okCli(cli);
    const names = Array.from({ length: 50 }, (_, i) => `p${i}`);
    host.defer(() => cli('rm', '-f', ...names));
    host.defer(() => cli('daemon', '--stop'));
    await ok('network', 'create', '--subnet', '10.73.0.0/24', 'par');
    const results = await Promise.all(names.map((n) => cli('run', '-d', '--name', n, '--network', 'par', '--', 'sleep', '600')));
    const failed = results.map((r, i) => ({ r, n: names[i] })).filter(({ r }) => r.code !== 0);
    t.same(failed.map(({ n, r }) => `${n}: exit ${r.code}: ${r.stderr.trim()}`), [], 'every run exited 0');
    const log = await readFile(join(host.runDir, 'daemon.log'), 'utf8');
    t.equal(log.match(/"msg":"daemon ready"/g)?.length, 1, 'one daemon was started for the 50');
    t.notMatch(log, /already running/, 'and no other was spawned to exit again at the single-instance lock');
    const addrs = (await ok('ps', '--format', '{{.Names}} {{.Networks}}')).trim().split('\n');
    t.equal(addrs.length, 50, 'ps shows 50 running containers');
    const ips = new Set<string>();
    for (const n of names) ips.add((await ok('inspect', '--format', '{{.NetworkSettings.Networks.par.IPAddress}}', n)).trim());
    t.equal(ips.size, 50, 'fifty distinct addresses');
    t.ok([...ips].every((ip) => /^10\.73\.0\.\d+$/.test(ip)), 'all in the network\'s subnet');
    for (const n of ['p0', 'p25', 'p49']) {
      const inside = (await ok('exec', n, 'ip', '-o', '-4', 'addr', 'show', 'eth0')).match(/inet (\S+)\//)?.[1];
      t.ok(inside !== undefined && ips.has(inside), `${n} has its address on its eth0 (${inside})`);
    }
    await ok('rm', '-f', ...names);
    t.equal((await ok('ps', '-a', '-q')).trim(), '', 'all removed');
    t.same((await links(host)).filter((l) => l.startsWith('veth')), [], 'no veth left');
  });
});

t.test('8 parallel daemon --start (the Node CLI): one starts it, the others find it running', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const node = cliFor(host, { frontEnd: false });
    host.defer(() => node('daemon', '--stop'));
    const rs = await Promise.all(Array.from({ length: 8 }, () => node('daemon', '--start')));
    t.same(rs.map((r) => r.code), Array(8).fill(0), 'all exit 0');
    const lines = rs.map((r) => r.stdout.trim());
    t.equal(lines.filter((l) => /^started daemon \d+$/.test(l)).length, 1, `one started it (${lines.join('; ')})`);
    t.equal(lines.filter((l) => /^already running: daemon \d+$/.test(l)).length, 7, 'seven found it running');
    t.equal(new Set(lines.map((l) => l.split(' ').at(-1))).size, 1, 'all name the same pid');
    const st = JSON.parse(await okCli(node)('daemon', '--status')) as { ok: boolean };
    t.equal(st.ok, true, 'it answers');
  });
});

t.test('exit codes as the README gives them: in use is 4, a full disk is 7 naming the path', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cli = cliFor(host);
    const ok = okCli(cli);
    host.defer(() => cli('rm', '-f', 'busy'));
    host.defer(() => cli('daemon', '--stop'));
    await ok('network', 'create', '--subnet', '10.74.0.0/24', 'used');
    await ok('run', '-d', '--name', 'busy', '--network', 'used', '--', 'sleep', '600');
    const rm = await cli('rm', 'busy');
    t.equal(rm.code, 4, 'rm of a running container: 4 (in use)');
    t.match(rm.stderr, /container busy is running: stop it first, or remove it with force/);
    const nrm = await cli('network', 'rm', 'used');
    t.equal(nrm.code, 4, 'network rm of a network with containers: 4');
    t.match(nrm.stderr, /has active endpoints/);
    t.equal((await cli('rm', 'nosuch')).code, 3, 'no such container: 3');

    // A state directory on a full filesystem (a 1 MiB tmpfs, filled).
    const full = join(host.runDir, 'full');
    await host.exec(['mkdir', '-p', full]);
    await host.exec(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tsnet-full', full]);
    host.defer(() => host.exec(['umount', '-l', full]).catch(() => undefined));
    const fullCli = cliFor(host, { stateDir: join(full, 'state'), runDir: join(host.runDir, 'full-run') });
    await okCli(fullCli)('network', 'ls');
    // dd ends with an error once the filesystem is full: that is the point.
    await host.exec(['dd', 'if=/dev/zero', `of=${full}/filler`, 'bs=64k']).catch(() => undefined);
    const r = await fullCli('network', 'create', '--subnet', '10.75.0.0/24', 'nospace');
    t.equal(r.code, 7, `a write on a full disk: 7 (${r.stderr.trim()})`);
    t.match(r.stderr, new RegExp(`${full.replaceAll('/', '\\/')}\\/state\\/\\S*.*(ENOSPC|no space left)`, 'i'), 'the message names the path and the cause');
    await host.exec(['rm', '-f', `${full}/filler`]);
    t.equal((await fullCli('network', 'create', '--subnet', '10.75.0.0/24', 'nospace')).code, 0, 'with space again: the same command works (nothing half-made blocks it)');
    await okCli(fullCli)('network', 'rm', 'nospace');
  });
});
