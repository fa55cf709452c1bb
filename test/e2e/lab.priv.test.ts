/**
 * `tsnet lab` end to end through the built CLI, in one isolated host: the example router triangle
 * (every host pings every other, names resolve, the picture), idempotent `up`, a changed file
 * converging, a failed `up` rolled back, invalid files and netem fields refused with nothing
 * changed, rate limiting measured with iperf3 (and changed on the running link), `down` after a
 * crash in the middle of `up`, and `down` leaving nothing (links, namespaces, records, rules).
 */
import t from 'tap';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { XMLValidator } from 'fast-xml-parser';
import { linearLab } from '../../bench/lab.bench.js';
import { TSNET_BIN, cliFor, okCli, type Cli } from '../helpers/cli.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';

const EXAMPLE = new URL('../../examples/router-triangle.yaml', import.meta.url);
const HOSTS: Record<string, string> = { h1: '10.1.0.11', h2: '10.1.0.12', h3: '10.2.0.13', h4: '10.2.0.14' };

/** What tsnet may leave in the host: links, tsnet's nft rules, namespaces, records. */
async function snapshot(host: IsolatedHost): Promise<Record<string, string[]>> {
  const links = (JSON.parse((await host.exec(['ip', '-json', 'link', 'show'])).stdout) as { ifname: string }[]).map((l) => l.ifname).sort();
  const nft = (await host.exec(['nft', 'list', 'ruleset'])).stdout.split('\n').map((l) => l.trim()).filter((l) => /elements|saddr|daddr|oifname|iifname|jump|goto/.test(l)).sort();
  const netns = (await readdir(join(host.runDir, 'netns')).catch(() => [])).sort();
  const records: string[] = [];
  for (const c of ['labs', 'links', 'switches', 'containers', 'sandboxes', 'endpoints', 'networks']) {
    // Dot files are the store's temporary files (a killed writer's): not records.
    records.push(...(await readdir(join(host.stateDir, 'records', c)).catch(() => [])).filter((f) => !f.startsWith('.')).map((f) => `${c}/${f}`));
  }
  return { links, nft, netns, records: records.sort() };
}

/** The kernel deletes a namespace's interfaces (and their veth peers) a moment after the namespace goes. */
async function settled(host: IsolatedHost, want: Record<string, string[]>): Promise<Record<string, string[]>> {
  let got = await snapshot(host);
  for (let i = 0; i < 40 && JSON.stringify(got) !== JSON.stringify(want); i++) {
    await new Promise((r) => setTimeout(r, 50));
    got = await snapshot(host);
  }
  return got;
}

async function ping(cli: Cli, lab: string, node: string, to: string): Promise<boolean> {
  const r = await cli('lab', 'exec', '--name', lab, node, '--', 'busybox', 'ping', '-c', '1', '-W', '2', to);
  return r.code === 0;
}

interface View {
  status: string;
  nodes: { name: string; status: string; interfaces: { name: string; kind: string; addresses: string[]; peer?: string; impair?: string }[] }[];
  links: { ends: { node: string; interface: string; impair?: string }[] }[];
  networks: { name: string; subnets: string[] }[];
}

/** Container name → id, from `tsnet ps --format json` (Docker's JSON lines). */
const containerIds = async (ok: (...a: string[]) => Promise<string>): Promise<Record<string, string>> =>
  Object.fromEntries((await ok('ps', '--format', 'json')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { ID: string; Names: string }).map((c) => [c.Names, c.ID]));

t.test('tsnet lab, end to end', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cli = cliFor(host);
    const ok = okCli(cli);
    host.defer(() => cli('daemon', '--stop'));
    await ok('network', 'ls'); // the predefined networks, part of the empty state
    const empty = await snapshot(host);
    const dir = join(host.runDir, 'files');
    await host.exec(['mkdir', '-p', dir]);
    const file = (name: string, text: string): Promise<string> => writeFile(join(dir, name), text).then(() => join(dir, name));
    const example = await readFile(EXAMPLE, 'utf8');
    const tri = await file('triangle.yaml', example);

    await t.test('the example lab: up, every host pings every other, names resolve', async (t) => {
      const up = await cli('lab', 'up', '-f', tri);
      t.equal(up.code, 0, up.stderr);
      t.match(up.stdout, /lab triangle: up \(12 changes/);
      t.match(up.stderr, /node h1 done/, 'progress as plain lines when not a terminal');
      const pings: Promise<[string, boolean]>[] = [];
      for (const from of Object.keys(HOSTS)) {
        for (const [to, ip] of Object.entries(HOSTS)) if (to !== from) pings.push(ping(cli, 'triangle', from, ip).then((r) => [`${from} -> ${to}`, r]));
      }
      for (const [what, r] of await Promise.all(pings)) t.ok(r, `${what} pings`);
      // The resolver (the tsnet daemon) may still be working through the reloads of 7 connects on a loaded machine: 3 tries.
      let resolved = '';
      for (let i = 0; i < 3 && !resolved.includes('10.1.0.12'); i++) resolved = (await cli('lab', 'exec', '--name', 'triangle', 'h1', '--', 'busybox', 'nslookup', 'h2')).stdout;
      t.match(resolved, /Address:\s*10\.1\.0\.12/, 'h1 resolves h2 by node name on their network', { daemon: resolved.includes('10.1.0.12') ? '' : (await cli('daemon', '--status')).stdout });
      t.ok(await ping(cli, 'triangle', 'h1', 'h2'), 'and pings it by name');
      t.ok(await ping(cli, 'triangle', 'r3', '10.0.23.1'), 'r3 reaches r2 over their link');
      const direct = await cli('exec', 'triangle-h3', 'busybox', 'ping', '-c', '1', '-W', '2', '10.1.0.11');
      t.equal(direct.code, 0, 'tsnet exec LAB-NODE works too');
      const ps = await ok('ps');
      for (const n of ['r1', 'r2', 'r3', 'h1', 'h2', 'h3', 'h4']) t.match(ps, new RegExp(`triangle-${n}\\b`), `triangle-${n} in tsnet ps`);
      const nets = await ok('ps', '--format', '{{.Names}} {{.Networks}}');
      t.match(nets, /^triangle-h1 triangle-lan1$/m, 'with its network');
      t.match(nets, /^triangle-r3 none$/m, 'a node with links only: network none');
      const v = JSON.parse(await ok('lab', 'inspect', '--name', 'triangle', '--format', 'json')) as View;
      t.equal(v.status, 'ready');
      t.same(v.nodes.map((n) => n.name).sort(), ['h1', 'h2', 'h3', 'h4', 'r1', 'r2', 'r3']);
      const r2 = v.nodes.find((n) => n.name === 'r2');
      t.same(r2?.interfaces.map((i) => [i.name, i.kind, i.addresses.join(' '), i.peer ?? '']), [
        ['eth0', 'network', '10.2.0.254/24', ''], ['eth1', 'link', '10.0.12.2/30', 'r1:eth1'], ['eth2', 'link', '10.0.23.1/30', 'r3:eth2'],
      ], 'r2: its network endpoint and both links, with addresses and peers');
      t.equal(r2?.interfaces[2]?.impair, 'rate 100mbit');
      t.equal(v.links.length, 3);
      t.same(v.networks.map((n) => [n.name, n.subnets.join()]).sort(), [['triangle-lan1', '10.1.0.0/24'], ['triangle-lan2', '10.2.0.0/24']]);
      const table = await ok('lab', 'inspect', '-f', tri);
      t.match(table, /r2\s+linux\s+running/);
      t.match(table, /eth2\s+10\.0\.23\.1\/30\s+link to r3:eth2 \(rate 100mbit\)/);
      const mtu = JSON.parse(await ok('exec', 'triangle-r3', 'ip', '-json', 'link', 'show', 'eth2')) as { mtu: number }[];
      t.equal(mtu[0]?.mtu, 9000, 'the link\'s MTU');
      t.match(await ok('lab', 'ls'), /triangle\s+ready\s+7\s+3/);
      const svg = join(dir, 'triangle.svg');
      await ok('lab', 'graph', '-f', tri, '-o', svg);
      const text = await readFile(svg, 'utf8');
      t.equal(XMLValidator.validate(text), true, 'graph -o .svg writes well-formed SVG');
      t.match(await ok('lab', 'graph', '-f', tri, '-o', '-', '--format', 'mmd'), /^graph LR/);
    });

    await t.test('up of the same file changes nothing', async (t) => {
      const before = await containerIds(ok);
      const r = await cli('lab', 'up', '-f', tri);
      t.equal(r.code, 0, r.stderr);
      t.match(r.stdout, /lab triangle: up to date/);
      t.same(await containerIds(ok), before, 'every container is the same one');
    });

    await t.test('a changed file converges: a node added, one removed, an impairment changed', async (t) => {
      const before = await containerIds(ok);
      const changed = example
        .replace('  h4: { networks: [{ network: lan2, ipv4: 10.2.0.14 }], exec: ["ip route add 10.1.0.0/24 via 10.2.0.254"] }\n',
          '  h5: { networks: [{ network: lan1, ipv4: 10.1.0.15 }], exec: ["ip route add 10.2.0.0/24 via 10.1.0.254"] }\n')
        .replace('rate: 100mbit', 'rate: 50mbit');
      const r = await cli('lab', 'up', '-f', await file('triangle.yaml', changed));
      t.equal(r.code, 0, r.stderr);
      t.match(r.stdout, /up \(4 changes/, 'remove h4, create h5, two link ends impaired');
      const after = await containerIds(ok);
      t.notOk('triangle-h4' in after, 'h4 is gone');
      t.ok('triangle-h5' in after, 'h5 is there');
      for (const n of ['r1', 'r2', 'r3', 'h1', 'h2', 'h3']) t.equal(after[`triangle-${n}`], before[`triangle-${n}`], `${n} kept running`);
      t.ok(await ping(cli, 'triangle', 'h5', HOSTS['h3'] ?? ''), 'h5 reaches h3 across the routers');
      const q = await ok('exec', 'triangle-r2', 'tc', 'qdisc', 'show', 'dev', 'eth2');
      t.match(q, /tbf .*rate 50Mbit/, 'the running link\'s rate changed in place');
      await file('triangle.yaml', example);
      const back = await cli('lab', 'up', '-f', tri);
      t.equal(back.code, 0, back.stderr);
      t.ok(await ping(cli, 'triangle', 'h4', HOSTS['h1'] ?? ''), 'and back: h4 again');
    });

    await t.test('a failed up is rolled back to the state before it', async (t) => {
      const before = await containerIds(ok);
      const beforeLinks = (JSON.parse(await ok('lab', 'inspect', '--name', 'triangle', '--format', 'json')) as View).links.length;
      const bad = example.replace('links:\n', '  h6: { networks: [lan2], exec: ["ip route add 10.1.0.0/24 via 10.99.0.1"] }\n  r4: {}\nlinks:\n  - endpoints: ["r4:eth1", "r3:eth3"]\n');
      const r = await cli('lab', 'up', '-f', await file('bad.yaml', bad));
      t.equal(r.code, 2, 'a failing exec command is invalid input (exit 2)');
      t.match(r.stderr, /nodes\.h6\.exec\[0\]: "ip route add 10\.1\.0\.0\/24 via 10\.99\.0\.1" exited \d+ in triangle-h6: .*\(rolled back\)/s);
      t.match(r.stderr, /rolling back/);
      const after = await containerIds(ok);
      t.same(Object.keys(after).sort(), Object.keys(before).sort(), 'the same nodes as before');
      for (const h of Object.keys(HOSTS)) t.equal(after[`triangle-${h}`], before[`triangle-${h}`], `${h}, which the failed file did not touch, kept running`);
      const v = JSON.parse(await ok('lab', 'inspect', '--name', 'triangle', '--format', 'json')) as View;
      t.equal(v.status, 'ready');
      t.equal(v.links.length, beforeLinks, 'no link of the failed file is left');
      t.notOk(v.nodes.some((n) => n.name === 'r4' || n.name === 'h6'));
      for (const [from, to] of [['h1', 'h4'], ['h3', 'h2'], ['r1', '10.0.12.2'], ['r3', '10.0.23.1']] as const) {
        t.ok(await ping(cli, 'triangle', from, HOSTS[to] ?? to), `the lab works as before: ${from} -> ${to} (the routers re-made by the failed up got their routes back)`);
      }
    });

    await t.test('invalid files and netem fields change nothing', async (t) => {
      const before = await snapshot(host);
      const bad = await cli('lab', 'up', '-f', await file('invalid.yaml', 'name: x\nnodes:\n  r2: { ports: ["8080:80:90"], networks: [lan] }\n'));
      t.equal(bad.code, 2);
      t.match(bad.stderr, /nodes\.r2\.networks\[0\]: no network "lan"/);
      t.match(bad.stderr, /nodes\.r2\.ports\[0\]: /);
      const netem = await cli('lab', 'up', '-f', await file('netem.yaml', 'name: n\nnodes: { a: {}, b: {} }\nlinks:\n  - endpoints: ["a:eth1", "b:eth1"]\n    impair: { rate: 10mbit, delay: 20ms, loss: 1% }\n'));
      const hasNetem = await host.exec(['unshare', '--net', 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms']).then(() => true, () => false);
      if (hasNetem) {
        t.equal(netem.code, 0, `this kernel has netem: applied (${netem.stderr})`);
        await ok('lab', 'down', '--name', 'n');
      } else {
        t.equal(netem.code, 6, 'no netem in this kernel: unavailable (exit 6)');
        t.match(netem.stderr, /links\[0\]\.impair\.delay: this kernel has no netem \(sch_netem\).*links\[0\]\.impair\.loss/);
        const imp = await cli('lab', 'impair', 'triangle-r2:eth2', '--delay', '10ms');
        t.equal(imp.code, 6);
        t.match(imp.stderr, /--delay: this kernel has no netem/);
      }
      t.same(await snapshot(host), before, 'nothing changed');
      const missing = await cli('lab', 'down', '--name', 'nosuchlab');
      t.equal(missing.code, 3, 'down of an unknown lab: not found');
    });

    await t.test('down removes everything the lab made, and nothing else', async (t) => {
      await host.exec(['ip', 'link', 'add', 'mine0', 'type', 'bridge']); // the user's: must stay
      const want = { ...empty, links: [...(empty.links ?? []), 'mine0'].sort() };
      const r = await cli('lab', 'down', '-f', tri);
      t.equal(r.code, 0, r.stderr);
      t.same(await settled(host, want), want, 'links, rules, namespaces and records as before the lab');
      t.equal((await cli('lab', 'down', '--name', 'triangle')).code, 3, 'a second down: no such lab');
      await host.exec(['ip', 'link', 'del', 'mine0']);
    });
  });
});

t.test('rate limiting: iperf3 through a 10mbit link, then 5mbit set on the running link', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cli = cliFor(host);
    const ok = okCli(cli);
    const f = join(host.runDir, 'rate.yaml');
    await writeFile(f, `name: rl
nodes:
  a: {}
  b: { cmd: "iperf3 -s -p 5201" }
links:
  - endpoints: [{ node: a, interface: eth1, ipv4: 10.0.0.1/30 }, { node: b, interface: eth1, ipv4: 10.0.0.2/30 }]
    impair: { rate: 10mbit }
`);
    await ok('lab', 'up', '-f', f);
    const measure = async (): Promise<number> => {
      for (let i = 0; ; i++) {
        const r = await cli('lab', 'exec', '--name', 'rl', 'a', '--', 'iperf3', '-c', '10.0.0.2', '-p', '5201', '-t', '3', '-J');
        if (r.code === 0) return (JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
        if (i >= 20) throw new Error(`iperf3: ${r.stdout}${r.stderr}`);
        await new Promise((res) => setTimeout(res, 200)); // the server is starting
      }
    };
    const ten = await measure();
    t.ok(ten >= 8e6 && ten <= 12e6, `10mbit link: ${(ten / 1e6).toFixed(2)} Mbit/s (within ±20%)`);
    t.match(await ok('lab', 'impair', 'rl-a:eth1', '--rate', '5mbit'), /rl-a:eth1: rate 5mbit/);
    const five = await measure();
    t.ok(five >= 4e6 && five <= 6e6, `after lab impair --rate 5mbit: ${(five / 1e6).toFixed(2)} Mbit/s (within ±20%)`);
    const view = JSON.parse(await ok('lab', 'inspect', '--name', 'rl', '--format', 'json')) as View;
    t.same(view.links[0]?.ends.map((e) => e.impair), ['rate 5mbit', 'rate 10mbit'], 'one end changed');
    await ok('lab', 'impair', 'rl-a:eth1', '--clear');
    t.notMatch(await ok('exec', 'rl-a', 'tc', 'qdisc', 'show', 'dev', 'eth1'), /tbf/, '--clear removes the qdisc');
    const bad = await cli('lab', 'impair', 'rl-a:eth9', '--rate', '1mbit');
    t.equal(bad.code, 3, 'an unknown link end: not found');
    await ok('lab', 'down', '--name', 'rl');
  });
});

t.test('down after a crash in the middle of up removes what the lab made', { skip: skipUnlessRoot }, async (t) => {
  await withIsolatedHost(async (host) => {
    const cli = cliFor(host);
    const ok = okCli(cli);
    await ok('network', 'ls');
    const empty = await snapshot(host);
    const f = join(host.runDir, 'crash.yaml');
    await writeFile(f, linearLab('crash', 12));
    const p = host.spawnIn(host.ns, [process.execPath, TSNET_BIN, '--state-dir', host.stateDir, '--run-dir', host.runDir, 'lab', 'up', '-f', f, '--parallel', '2']);
    // Killed once some of it exists, and well before all of it does.
    let seen = 0;
    for (let i = 0; i < 400 && seen < 3; i++) {
      await new Promise((r) => setTimeout(r, 25));
      seen = (await readdir(join(host.stateDir, 'records', 'containers')).catch(() => [])).length;
    }
    p.child.kill('SIGKILL');
    await p.close(2000);
    t.ok(seen >= 3, `killed with ${seen} containers made`);
    const ls = await ok('lab', 'ls');
    t.match(ls, /crash\s+applying/, 'the lab record says the up did not finish');
    const mid = await snapshot(host);
    t.ok((mid.links ?? []).length > (empty.links ?? []).length || (mid.netns ?? []).length > 0, 'the crash left kernel objects');
    t.ok((mid.records ?? []).some((r) => r.startsWith('switches/') || r.startsWith('links/') || r.startsWith('sandboxes/')), 'and records');
    const down = await cli('lab', 'down', '--name', 'crash');
    t.equal(down.code, 0, down.stderr);
    t.same(await settled(host, empty), empty, 'nothing left: links, bridges, namespaces, records');
    t.match(await ok('ps', '-a'), /^CONTAINER ID[^\n]*\n$/, 'no container');
  });
});
