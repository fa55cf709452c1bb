/**
 * The embedded DNS resolver end to end (issue 5), through the built CLI in an isolated host, with
 * real packets sent from inside container namespaces: names, aliases in rotation, PTR, visibility
 * across networks, forwarding to a fake upstream in its own namespace, upstream down → SERVFAIL,
 * TCP, removal, a neighbour namespace that gets no answer, the daemon's lifecycle, and fuzzing.
 */
import t, { type Test } from 'tap';
import { readFile } from 'node:fs/promises';
import type { NetnsRef } from '../../core/net.js';
import { inNetns, run } from '../../sys/exec.js';
import { afterFirstRecovery, cliFor, okCli, type Cli } from '../helpers/cli.js';
import type { DnsResult } from '../helpers/dns-client.js';
import { dnsTool } from '../helpers/dns-tool-run.js';
import { skipUnlessRoot, withIsolatedHost, type IsolatedHost } from '../helpers/isolated-host.js';

const tool = await dnsTool('dns-tool');
t.teardown(() => tool.remove());
const node = (...a: string[]): [string, ...string[]] => [process.execPath, tool.path, ...a];
const UPSTREAM_NS_ADDR = '198.51.100.53';

interface World {
  readonly host: IsolatedHost;
  readonly cli: Cli;
  readonly ok: (...a: string[]) => Promise<string>;
}

const ask = tool.ask;
const addrs = (r: DnsResult | undefined): string[] => (r?.answers ?? []).map((a) => a.data);

async function sandboxOf(w: World, name: string): Promise<{ ns: NetnsRef; ip: (net: string) => string; resolvConf: string; nameserver: string }> {
  const info = (JSON.parse(await w.ok('inspect', name)) as { NetworkSettings: { SandboxKey: string; ResolvConfPath: string; Networks: Record<string, { IPAddress: string }> } }[])[0];
  if (!info) throw new Error(`no container ${name}`);
  const s = info.NetworkSettings;
  const resolvConf = await readFile(s.ResolvConfPath, 'utf8');
  return { ns: { kind: 'path', path: s.SandboxKey }, ip: (net) => s.Networks[net]?.IPAddress ?? '', resolvConf, nameserver: /^nameserver (\S+)$/m.exec(resolvConf)?.[1] ?? '' };
}

async function gateway(w: World, net: string): Promise<string> {
  const n = (JSON.parse(await w.ok('network', 'inspect', net)) as { IPAM: { Config: { Gateway: string }[] } }[])[0];
  return n?.IPAM.Config[0]?.Gateway ?? '';
}

async function daemonPid(w: World): Promise<number> {
  return Number((await readFile(`${w.host.runDir}/daemon.pid`, 'utf8')).trim());
}

/** A fake upstream resolver in its own namespace, wired to the host by a veth (198.51.100.0/24). */
async function fakeUpstream(host: IsolatedHost): Promise<{ ns: NetnsRef; stop: () => Promise<void> }> {
  const ns = await host.newNetns('upstream');
  if (ns.kind !== 'path') throw new Error('expected a path');
  await host.exec(['ip', 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up1', 'netns', ns.path]);
  await host.exec(['ip', 'addr', 'add', '198.51.100.1/24', 'dev', 'up0']);
  await host.exec(['ip', 'link', 'set', 'up0', 'up']);
  await host.execIn(ns, ['ip', 'addr', 'add', `${UPSTREAM_NS_ADDR}/24`, 'dev', 'up1']);
  await host.execIn(ns, ['ip', 'link', 'set', 'up1', 'up']);
  await host.execIn(ns, ['ip', 'route', 'add', 'default', 'via', '198.51.100.1']);
  const p = host.spawnIn(ns, node('serve', JSON.stringify({ addr: UPSTREAM_NS_ADDR, port: 53, answer: '192.0.2.77' })));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('fake upstream did not start')), 15_000);
    p.child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return { ns, stop: () => p.close(100).then(() => undefined, () => undefined) };
}

/** Cases run with the daemon's native UDP fast path (the default) and without it (TSNET_DNS_NATIVE=0). */
type Mode = 'native' | 'js';

interface DnsStatus {
  readonly pid: number;
  readonly services: { readonly dns: { readonly listeners: string[]; readonly records: number; readonly nativeFastPath: string; readonly native?: { readonly hits: number; readonly listeners: number } } };
}
const dnsStatus = async (w: World): Promise<DnsStatus> => JSON.parse(await w.ok('daemon', '--status')) as DnsStatus;

async function withDns(t: Test, mode: Mode, fn: (w: World) => Promise<void>): Promise<void> {
  await withIsolatedHost(async (host) => {
    host.defer(async () => {
      if (!t.passing()) t.comment(`daemon.log:\n${(await readFile(`${host.runDir}/daemon.log`, 'utf8').catch(() => '')).split('\n').slice(-40).join('\n')}`);
    });
    await host.exec(['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const cli = cliFor(host, { dnsUpstream: `${UPSTREAM_NS_ADDR}:53`, dnsNative: mode === 'native' ? '1' : '0' });
    const w: World = { host, cli, ok: okCli(cli) };
    host.defer(async () => {
      const ids = (await cli('ps', '-aq')).stdout.split('\n').filter(Boolean);
      if (ids.length > 0) await cli('rm', '-f', ...ids);
      await cli('daemon', '--stop');
    });
    await fn(w);
  });
}

const sleeper = (name: string, net: string, ...extra: string[]): string[] => ['run', '-d', '--name', name, '--network', net, ...extra, '--', 'sleep', '600'];

for (const mode of ['native', 'js'] as const) {
  t.test(`${mode}: names, aliases, PTR, visibility, forwarding, TCP, removal, neighbours`, { skip: skipUnlessRoot }, async (t) => {
    await withDns(t, mode, async (w) => {
      const upstream = await fakeUpstream(w.host);
      await w.ok('network', 'create', 'lab', '--subnet', '10.77.0.0/24');
      await w.ok('network', 'create', 'other', '--subnet', '10.78.0.0/24');
      await w.ok(...sleeper('client', 'lab'));
      await w.ok(...sleeper('web1', 'lab', '--network-alias', 'www', '--hostname', 'web1host'));
      await w.ok(...sleeper('web2', 'lab', '--network-alias', 'www'));
      await w.ok(...sleeper('db', 'other'));
      const gw = await gateway(w, 'lab');
      t.equal(gw, '10.77.0.1');
      const client = await sandboxOf(w, 'client');
      const web1 = await sandboxOf(w, 'web1');
      const web2 = await sandboxOf(w, 'web2');
      t.match(client.resolvConf, /^nameserver 10\.77\.0\.1$/m, "the container's resolv.conf points at its gateway");
      t.equal((client.resolvConf.match(/^nameserver/gm) ?? []).length, 1);

      // Right after `run` returned, no retry: the daemon acked the reload before run returned.
      const [byName, byHost, alias1, alias2, ptr, hidden, fwd, tcp, nodata] = await ask(client.ns, gw, [
        { name: 'web1', type: 'A' },
        { name: 'web1host', type: 'A' },
        { name: 'www', type: 'A' },
        { name: 'www', type: 'A' },
        { name: `${web1.ip('lab').split('.').reverse().join('.')}.in-addr.arpa`, type: 'PTR' },
        { name: 'db', type: 'A' },
        { name: 'example.com', type: 'A' },
        { name: 'web2', type: 'A', tcp: true },
        { name: 'web1', type: 'AAAA' },
      ]);
      t.same(addrs(byName), [web1.ip('lab')], 'container name');
      t.same(addrs(byHost), [web1.ip('lab')], 'hostname');
      t.same([...addrs(alias1)].sort(), [web1.ip('lab'), web2.ip('lab')].sort(), 'alias: both containers');
      t.same(addrs(alias2), [...addrs(alias1)].reverse(), 'alias: rotated on the next query');
      t.same(addrs(ptr), ['web1'], 'PTR');
      t.equal(hidden?.rcode, 'NXDOMAIN', 'a name on another network is not visible');
      t.same(addrs(fwd), ['192.0.2.77'], 'forwarded to the fake upstream');
      t.same(addrs(tcp), [web2.ip('lab')], 'TCP query');
      t.equal(nodata?.rcode, 'NOERROR', 'NODATA: the name exists, no AAAA');
      t.equal(nodata?.answers?.length, 0);

      // The db container sees its own network only.
      const db = await sandboxOf(w, 'db');
      const fromDb = await ask(db.ns, db.nameserver, [{ name: 'db', type: 'A' }, { name: 'web1', type: 'A' }]);
      t.same(addrs(fromDb[0]), [db.ip('other')]);
      t.equal(fromDb[1]?.rcode, 'NXDOMAIN');

      // Which path answered: repeated UDP queries come from the native cache (web2's among them,
      // so the removal below proves the cache is cleared), or from JS when it is off. After the
      // daemon's first recovery pass, whose full reload clears that cache.
      await afterFirstRecovery(w.ok);
      for (let i = 0; i < 3; i++) t.same((await ask(client.ns, gw, [{ name: 'web2', type: 'A' }, { name: 'web1', type: 'A' }])).map(addrs), [[web2.ip('lab')], [web1.ip('lab')]]);
      const st = (await dnsStatus(w)).services.dns;
      if (mode === 'native') {
        t.match(st.nativeFastPath, /^active/, 'the native fast path is active');
        t.ok((st.native?.hits ?? 0) >= 4, `native hits ${st.native?.hits ?? 0} after repeated queries`);
      } else {
        t.match(st.nativeFastPath, /^off/, 'TSNET_DNS_NATIVE=0: off, and status says so');
        t.equal(st.native, undefined, 'no native counters');
      }

      // A removed container stops resolving the moment `rm` returns.
      await w.ok('rm', '-f', 'web2');
      const after = await ask(client.ns, gw, [{ name: 'web2', type: 'A' }, { name: 'www', type: 'A' }]);
      t.equal(after[0]?.rcode, 'NXDOMAIN', 'removed container');
      t.same(addrs(after[1]), [web1.ip('lab')], 'the alias keeps the remaining container');

      // A neighbour namespace routed to the bridge (not on it) gets no answer.
      const nb = await w.host.newNetns('neighbour');
      if (nb.kind !== 'path') throw new Error('expected a path');
      await w.host.exec(['ip', 'link', 'add', 'nb0', 'type', 'veth', 'peer', 'name', 'nb1', 'netns', nb.path]);
      await w.host.exec(['ip', 'addr', 'add', '203.0.113.1/24', 'dev', 'nb0']);
      await w.host.exec(['ip', 'link', 'set', 'nb0', 'up']);
      await w.host.execIn(nb, ['ip', 'addr', 'add', '203.0.113.2/24', 'dev', 'nb1']);
      await w.host.execIn(nb, ['ip', 'link', 'set', 'nb1', 'up']);
      await w.host.execIn(nb, ['ip', 'route', 'add', 'default', 'via', '203.0.113.1']);
      const fromNeighbour = await ask(nb, gw, [{ name: 'web1', type: 'A' }, { name: 'example.com', type: 'A' }, { name: 'web1', type: 'A', tcp: true }], 1000);
      t.equal(fromNeighbour[0]?.error, 'timeout', 'the neighbour gets no answer for a container name');
      t.equal(fromNeighbour[1]?.error, 'timeout', 'nor is it forwarded for (no open resolver)');
      t.not(fromNeighbour[2]?.rcode, 'NOERROR', 'nor over TCP');
      t.same(addrs((await ask(nb, UPSTREAM_NS_ADDR, [{ name: 'probe.example', type: 'A' }]))[0]), ['192.0.2.77'], 'while the neighbour does reach other servers (the check above can fail)');

      // Upstream down → SERVFAIL within the 2 s budget, never a hang (the client waits 5 s).
      await upstream.stop();
      const down = await ask(client.ns, gw, [{ name: 'example.org', type: 'A' }], 5000);
      t.equal(down[0]?.rcode, 'SERVFAIL', 'upstream down: SERVFAIL');
      t.same(addrs((await ask(client.ns, gw, [{ name: 'web1', type: 'A' }]))[0]), [web1.ip('lab')], 'local names unaffected');
    });
  });

  // The daemon's life cycle and the fuzz do not depend on the path (the JS path's fuzz is in
  // dns/server.test.ts and the bench): run with the default (native) only, to keep this file short.
  if (mode === 'native') t.test(`${mode}: default network, internal networks, --dns, daemon lifecycle, fuzz`, { skip: skipUnlessRoot }, async (t) => {
    await withDns(t, mode, async (w) => {
      await w.ok(...sleeper('a', 'bridge'));
      await w.ok(...sleeper('b', 'bridge'));
      const a = await sandboxOf(w, 'a');
      const b = await sandboxOf(w, 'b');
      const gw = a.nameserver;
      t.match(gw, /^10\.89\.\d+\.1$/, 'the default network has DNS too: resolv.conf names its gateway');
      t.same(addrs((await ask(a.ns, gw, [{ name: 'b', type: 'A' }]))[0]), [b.ip('bridge')], 'names on the default network');

      await w.ok('network', 'create', '--internal', 'sealed', '--subnet', '10.79.0.0/24');
      await w.ok(...sleeper('s1', 'sealed'));
      const s1 = await sandboxOf(w, 's1');
      const inner = await ask(s1.ns, '10.79.0.1', [{ name: 's1', type: 'A' }, { name: 'example.com', type: 'A' }]);
      t.same(addrs(inner[0]), [s1.ip('sealed')], 'internal networks answer local names');
      t.equal(inner[1]?.rcode, 'REFUSED', 'and never forward');

      await w.ok('network', 'create', '--disable-dns', 'plain', '--subnet', '10.80.0.0/24');
      await w.ok(...sleeper('p1', 'plain'));
      const p1 = await sandboxOf(w, 'p1');
      t.notMatch(p1.resolvConf, /10\.80\.0\.1/, '--disable-dns: no embedded resolver');
      t.equal((await ask(p1.ns, '10.80.0.1', [{ name: 'p1', type: 'A' }], 800))[0]?.error, 'timeout', 'and nothing listens there');
      await w.ok(...sleeper('c', 'bridge', '--dns', '198.51.100.9', '--dns-search', 'corp.test', '--dns-option', 'timeout:1'));
      const c = await sandboxOf(w, 'c');
      t.match(c.resolvConf, /^nameserver 198\.51\.100\.9$/m, '--dns: exactly those servers');
      t.match(c.resolvConf, /^search corp\.test$/m);
      t.match(c.resolvConf, /^options timeout:1$/m);

      // Fuzz the live server from inside a container: 10^5 random and mutated packets.
      const status = await dnsStatus(w);
      const pid = status.pid;
      t.equal(pid, await daemonPid(w), 'status names the pid in the pid file');
      t.ok(status.services.dns.listeners.includes(gw) && status.services.dns.listeners.includes('10.79.0.1') && !status.services.dns.listeners.includes('10.80.0.1'), 'listeners on the DNS-enabled gateways only');
      const rss = async (): Promise<number> => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
      const before = await rss();
      const { stdout } = await run(inNetns(a.ns, node('fuzz', JSON.stringify({ server: gw, port: 53, count: 100_000, seed: 7 }))), { timeoutMs: 150_000 });
      const fuzz = JSON.parse(stdout) as { sent: number; replies: number };
      t.ok(fuzz.sent >= 99_000, `sent ${fuzz.sent} packets (${fuzz.replies} replies)`);
      t.equal(await daemonPid(w), pid, 'the daemon survived');
      t.same(addrs((await ask(a.ns, gw, [{ name: 'b', type: 'A' }]))[0]), [b.ip('bridge')], 'and answers valid queries');
      const after = await rss();
      t.comment(`daemon RSS ${before} kB before, ${after} kB after 10^5 fuzz packets`);
      t.ok(after < before + 64 * 1024, 'memory stays bounded');

      // Stopped cleanly; restarted on demand with its state from the records.
      t.match(await w.ok('daemon', '--stop'), /stopping daemon \d+/);
      for (let i = 0; i < 50 && (await readFile(`${w.host.runDir}/daemon.pid`).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 100));
      const gone = await w.cli('daemon', '--status');
      t.equal(gone.code, 3, 'no daemon after --stop');
      t.equal((await ask(a.ns, gw, [{ name: 'b', type: 'A' }], 500))[0]?.error, 'timeout', 'nothing answers while it is down');
      await w.ok(...sleeper('d', 'bridge'));
      t.not(await daemonPid(w), pid, 'a new daemon was started by run');
      const restarted = await ask(a.ns, gw, [{ name: 'b', type: 'A' }, { name: 'd', type: 'A' }]);
      t.same(addrs(restarted[0]), [b.ip('bridge')], 'old names come back from the records');
      t.same(addrs(restarted[1]), [(await sandboxOf(w, 'd')).ip('bridge')]);
      const second = await w.cli('daemon');
      t.equal(second.code, 4, 'a second daemon refuses to start');
      t.match(second.stderr, /already running/);
    });
  });
}
