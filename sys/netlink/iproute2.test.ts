/**
 * Unit tests of the iproute2 adapter without root: the pure parts (line building, error mapping,
 * JSON parsing, with outputs captured from iproute2 6.1) and the batch protocol, against a scripted
 * stand-in for `ip -force -batch -` that behaves like the real one (measured): stderr carries each
 * failure's message and `Command failed -:N`; stdout carries one JSON line per successful read and
 * may lag behind stderr.
 */
import t from 'tap';
import { EventEmitter } from 'node:events';
import { PassThrough, Writable } from 'node:stream';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { TsnetError } from '../../core/errors.js';
import { parseIfName, parseIpAddr, parsePrefix, type NetnsRef } from '../../core/net.js';
import type { Argv, LongLived } from '../exec.js';
import type { NetlinkOp } from './api.js';
import {
  classifyIpError, createIproute2Netlink, createIproute2NetlinkFor, opLines, parseIpLinks, parseIpRoutes, toAddrs, toLink,
  type Iproute2Deps,
} from './iproute2.js';

const n = parseIfName;
const p = parsePrefix;
const a = parseIpAddr;
const HOST: NetnsRef = { kind: 'host' };
const CTR: NetnsRef = { kind: 'path', path: '/run/netns/ctr' };

// ---------------------------------------------------------------------------------------------
// pure parts

t.test('opLines: one line per op, ip batch syntax', async (t) => {
  const L = (op: NetlinkOp, ns: NetnsRef = HOST): string[] => opLines(op, ns, '/proc/1/ns/net');
  t.same(L({ op: 'addBridge', name: n('br0'), mtu: 1400, mac: '02:00:00:00:00:01' as never }), ['link add name br0 mtu 1400 address 02:00:00:00:00:01 type bridge']);
  t.same(L({ op: 'ensureBridge', name: n('br0') }), ['link add name br0 type bridge', 'addr show dev br0']);
  t.same(L({ op: 'addVeth', name: n('vh0'), peer: n('eth0'), peerNetns: CTR, mtu: 1450 }), [
    'link add name vh0 mtu 1450 type veth peer name eth0 mtu 1450 netns /run/netns/ctr',
  ]);
  t.same(L({ op: 'addVeth', name: n('a'), peer: n('b'), peerNetns: CTR }, CTR), ['link add name a type veth peer name b'], 'same namespace: no netns');
  t.same(L({ op: 'addVeth', name: n('a'), peer: n('b'), peerNetns: HOST }, CTR), ['link add name a type veth peer name b netns /proc/1/ns/net'], 'host from a namespace');
  t.same(L({ op: 'removeLink', name: n('x') }), ['link del dev x']);
  t.same(L({ op: 'setLink', name: n('x'), changes: { up: true, master: n('br0'), mtu: 1500, mac: '02:00:00:00:00:02' as never, name: n('y') } }), [
    'link set dev x name y address 02:00:00:00:00:02 mtu 1500 master br0 up',
  ]);
  t.same(L({ op: 'setLink', name: n('x'), changes: { master: null, up: false } }), ['link set dev x nomaster down']);
  t.same(L({ op: 'setLink', name: n('x'), changes: {} }), [], 'no change, no line');
  t.same(L({ op: 'addAddr', dev: n('x'), prefix: p('fd00::1/64'), nodad: true }), ['addr add fd00::1/64 dev x nodad']);
  t.same(L({ op: 'addAddr', dev: n('x'), prefix: p('10.0.0.1/24'), nodad: true }), ['addr add 10.0.0.1/24 dev x'], 'nodad is IPv6 only');
  t.same(L({ op: 'ensureAddr', dev: n('x'), prefix: p('10.0.0.1/24') }), ['addr replace 10.0.0.1/24 dev x']);
  t.same(L({ op: 'removeAddr', dev: n('x'), prefix: p('10.0.0.1/24') }), ['addr del 10.0.0.1/24 dev x']);
  t.same(L({ op: 'addRoute', route: { dst: p('0.0.0.0/0'), via: a('10.0.0.1') } }), ['route add 0.0.0.0/0 via 10.0.0.1']);
  t.same(L({ op: 'ensureRoute', route: { dst: p('10.1.0.0/16'), via: a('10.0.0.1'), dev: n('x'), metric: 5, src: a('10.0.0.2') } }), [
    'route replace 10.1.0.0/16 via 10.0.0.1 dev x metric 5 src 10.0.0.2',
  ]);
  t.same(L({ op: 'removeRoute', route: { dst: p('::/0') } }), ['route del ::/0']);
});

t.test('classifyIpError: kernel and ip messages to codes', async (t) => {
  const cases: [string, string][] = [
    ['RTNETLINK answers: File exists', 'ALREADY_EXISTS'],
    ['Error: ipv4: Address already assigned.', 'ALREADY_EXISTS'],
    ['Error: ipv6: address already assigned.', 'ALREADY_EXISTS'],
    ['Cannot find device "nope"', 'NOT_FOUND'],
    ['Device "nope" does not exist.', 'NOT_FOUND'],
    ['RTNETLINK answers: No such process', 'NOT_FOUND'],
    ['Error: ipv4: Address not found.', 'NOT_FOUND'],
    ['Error: ipv6: address not found.', 'NOT_FOUND'],
    ['nsenter: cannot open /run/x: No such file or directory', 'NOT_FOUND'],
    ['Error: argument "/run/x" is wrong: Invalid "netns" value', 'NOT_FOUND'],
    ['Error: mtu greater than device maximum.', 'INVALID_CONFIG'],
    ['Error: Nexthop has invalid gateway.', 'INVALID_CONFIG'],
    ['Error: Device for nexthop is not up.', 'INVALID_CONFIG'],
    ['Error: Nexthop device is not up.', 'INVALID_CONFIG'],
    ['RTNETLINK answers: No route to host', 'INVALID_CONFIG'],
    ['Error: Egress device not specified.', 'INVALID_CONFIG'],
    ['Error: Invalid prefix for given prefix length.', 'INVALID_CONFIG'],
    ['RTNETLINK answers: Operation not supported', 'INVALID_CONFIG'],
    ['Error: Can not enslave a bridge to a bridge.', 'INVALID_CONFIG'],
    ['Error: ipv6: IPv6 is disabled on this device.', 'INVALID_CONFIG'],
    ['RTNETLINK answers: Numerical result out of range', 'INVALID_CONFIG'],
    ["nsenter: reassociate to namespace 'ns/net' failed: Invalid argument", 'INVALID_CONFIG'],
    ['RTNETLINK answers: Operation not permitted', 'UNAVAILABLE'],
    ['RTNETLINK answers: No buffer space available', 'EXHAUSTED'],
    ['Object "x" is unknown, try "ip help".', 'INTERNAL'],
  ];
  for (const [msg, code] of cases) t.equal(classifyIpError(msg), code, msg);
});

// Captured from `ip -json -details addr show` / `route show table all` (iproute2 6.1, trimmed).
const LINKS = JSON.stringify([
  { ifindex: 1, ifname: 'lo', flags: ['LOOPBACK', 'UP', 'LOWER_UP'], mtu: 65536, operstate: 'UNKNOWN', link_type: 'loopback', address: '00:00:00:00:00:00', addr_info: [
    { family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host', label: 'lo' }, { family: 'inet6', local: '::1', prefixlen: 128, scope: 'host' }] },
  { ifindex: 2, ifname: 'br0', flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'], mtu: 1500, address: '3a:f5:55:f5:e4:a5', linkinfo: { info_kind: 'bridge', info_data: { stp_state: 0 } }, addr_info: [
    { family: 'inet', local: '10.1.0.1', prefixlen: 24, scope: 'global' }, { family: 'inet6', local: 'fd00:1::1', prefixlen: 64, scope: 'global', nodad: true },
    { family: 'inet6', local: 'fe80::a899:9fff:fee0:16c0', prefixlen: 64, scope: 'link', tentative: true }] },
  { ifindex: 3, link_index: 2, ifname: 'vh0', flags: ['BROADCAST', 'MULTICAST', 'UP'], mtu: 1500, master: 'br0', address: '3a:f5:55:f5:e4:a5', link_netnsid: 0,
    linkinfo: { info_kind: 'veth', info_slave_kind: 'bridge', info_slave_data: { state: 'forwarding' } }, addr_info: [] },
]);
const ROUTES = JSON.stringify([
  { type: 'unicast', dst: 'default', gateway: '10.1.0.1', dev: 'eth5', table: 'main', protocol: 'boot', scope: 'global', flags: [] },
  { type: 'unicast', dst: '10.1.0.0/24', dev: 'eth5', table: 'main', protocol: 'kernel', scope: 'link', prefsrc: '10.1.0.2', flags: [] },
  { type: 'unicast', dst: '10.5.0.0/16', dev: 'eth5', table: 'main', protocol: 'boot', scope: 'link', metric: 50, flags: [] },
  { type: 'unicast', dst: '10.6.0.7', dev: 'eth5', table: 'main', protocol: 'boot', scope: 'link', flags: [] },
  { type: 'local', dst: '10.1.0.2', dev: 'eth5', table: 'local', protocol: 'kernel', scope: 'host', prefsrc: '10.1.0.2', flags: [] },
  { type: 'unicast', dst: 'fd00:1::/64', dev: 'eth5', table: 'main', protocol: 'kernel', scope: 'global', metric: 256, flags: [], pref: 'medium' },
  { type: 'unicast', dst: 'default', dev: 'eth5', table: 'main', protocol: 'boot', scope: 'global', metric: 1024, flags: [], pref: 'medium' },
  { type: 'multicast', dst: 'ff00::/8', dev: 'eth5', table: 'local', protocol: 'kernel', scope: 'global', metric: 256, flags: [], pref: 'medium' },
]);

t.test('parsing ip -json output', async (t) => {
  const links = parseIpLinks(LINKS);
  t.same(links.map(toLink), [
    { name: 'lo', index: 1, kind: undefined, up: true, carrier: true, mtu: 65536, mac: '00:00:00:00:00:00', master: undefined },
    { name: 'br0', index: 2, kind: 'bridge', up: true, carrier: true, mtu: 1500, mac: '3a:f5:55:f5:e4:a5', master: undefined },
    { name: 'vh0', index: 3, kind: 'veth', up: true, carrier: false, mtu: 1500, mac: '3a:f5:55:f5:e4:a5', master: 'br0' },
  ]);
  t.same(links.flatMap(toAddrs).map((x) => `${x.dev} ${x.prefix} ${x.family} ${x.scope}`), [
    'lo 127.0.0.1/8 4 host', 'lo ::1/128 6 host', 'br0 10.1.0.1/24 4 global', 'br0 fd00:1::1/64 6 global', 'br0 fe80::a899:9fff:fee0:16c0/64 6 link',
  ]);
  t.same(parseIpRoutes(ROUTES).map((r) => `${r.dst} ${r.family} ${String(r.via)} ${String(r.dev)} ${r.metric} ${r.proto} ${r.scope} ${String(r.src)}`), [
    '0.0.0.0/0 4 10.1.0.1 eth5 0 boot global undefined',
    '10.1.0.0/24 4 undefined eth5 0 kernel link 10.1.0.2',
    '10.5.0.0/16 4 undefined eth5 50 boot link undefined',
    '10.6.0.7/32 4 undefined eth5 0 boot link undefined',
    'fd00:1::/64 6 undefined eth5 256 kernel global undefined',
    '::/0 6 undefined eth5 1024 boot global undefined',
  ], 'main-table unicast only; default and host routes normalised; family from the IPv6 preference');
  t.throws(() => parseIpLinks('[{"ifindex":'), { code: 'INTERNAL' });
  t.throws(() => parseIpLinks('[{"ifname":"x"}]'), { code: 'INTERNAL' });
  t.throws(() => parseIpRoutes('{}'), { code: 'INTERNAL' });
});

// ---------------------------------------------------------------------------------------------
// a scripted `ip -force -json -details -batch -`

interface Reply {
  /** stderr message lines; the line fails if given. */
  readonly fail?: readonly string[];
  /** one stdout line (a read's JSON). */
  readonly out?: string;
  /** print this on stderr and exit with code 255 (a fatal argument error). */
  readonly fatal?: string;
}

class FakeIp extends EventEmitter {
  readonly pid: number;
  readonly stdin: Writable;
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  readonly writes: string[] = [];
  readonly lines: string[] = [];
  killedWith: string | undefined;
  #buf = '';
  #lineNo = 0;
  #exited = false;
  /** Hold every line without answering (a hung process). */
  hang = false;
  /** Deliver stdout this many ms after stderr (the pipes are independent). */
  stdoutLagMs = 0;
  /** Write output in pieces of this many characters (0: whole). */
  pieces = 0;

  #write(stream: PassThrough, text: string): void {
    if (this.pieces <= 0) {
      stream.write(text);
      return;
    }
    for (let i = 0; i < text.length; i += this.pieces) stream.write(text.slice(i, i + this.pieces));
  }

  readonly reply: (line: string) => Reply;

  constructor(pid: number, reply: (line: string) => Reply) {
    super();
    this.pid = pid;
    this.reply = reply;
    this.stdin = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        this.writes.push(chunk.toString());
        this.#feed(chunk.toString());
        cb();
      },
      final: (cb) => {
        cb();
        this.exit(0, null);
      },
    });
    this.stdin.on('error', () => undefined);
  }

  #feed(text: string): void {
    this.#buf += text;
    let i: number;
    while ((i = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, i);
      this.#buf = this.#buf.slice(i + 1);
      if (this.hang || this.#exited) continue;
      const no = ++this.#lineNo;
      this.lines.push(line);
      if (line.startsWith('tsnet-sentinel-')) {
        this.#write(this.stderr, `Object "${line}" is unknown, try "ip help".\nCommand failed -:${no}\n`);
        continue;
      }
      const r = this.reply(line);
      if (r.fatal !== undefined) {
        this.stderr.write(`${r.fatal}\n`);
        this.exit(255, null);
        return;
      }
      if (r.out !== undefined) {
        const out = `${r.out}\n`;
        if (this.stdoutLagMs > 0) setTimeout(() => this.#write(this.stdout, out), this.stdoutLagMs);
        else this.#write(this.stdout, out);
      }
      if (r.fail) this.#write(this.stderr, `${r.fail.join('\n')}\nCommand failed -:${no}\n`);
    }
  }

  exit(code: number | null, signal: string | null): void {
    if (this.#exited) return;
    this.#exited = true;
    setTimeout(() => {
      this.stdout.end();
      this.stderr.end();
      this.emit('exit', code, signal);
      this.emit('close', code, signal);
    }, this.stdoutLagMs + 1);
  }

  kill(signal = 'SIGTERM'): boolean {
    this.killedWith = signal;
    this.exit(null, signal);
    return true;
  }

  ref(): void {}
  unref(): void {}
}

/** A spawner handing out FakeIps; remembers every one and the argv it was started with. */
function fakeSpawner(reply: (line: string) => Reply = () => ({})) {
  const procs: FakeIp[] = [];
  const argvs: Argv[] = [];
  let pid = 1000;
  const spawn = (argv: Argv): LongLived => {
    const child = new FakeIp(++pid, reply);
    procs.push(child);
    argvs.push(argv);
    const closed = new Promise<void>((r) => child.once('close', () => r()));
    return {
      pid: child.pid,
      child: child as unknown as ChildProcessWithoutNullStreams,
      async close() {
        child.stdin.end();
        await closed;
      },
    };
  };
  return { spawn, procs, argvs };
}

/** Replies like the kernel for a tiny world: links "lo" and "br0" exist. */
function kernelish(line: string): Reply {
  if (line.startsWith('addr show dev ')) {
    const dev = line.slice('addr show dev '.length);
    if (dev === 'lo' || dev === 'br0') return { out: JSON.stringify([{ ifindex: dev === 'lo' ? 1 : 2, ifname: dev, flags: ['UP'], mtu: 1500, ...(dev === 'br0' ? { linkinfo: { info_kind: 'bridge' } } : {}) }]) };
    return { fail: [`Device "${dev}" does not exist.`] };
  }
  if (line === 'addr show') return { out: LINKS };
  if (line.startsWith('route show')) return { out: ROUTES };
  if (line.startsWith('link add name br0 ') || line.startsWith('link add name lo ')) return { fail: ['RTNETLINK answers: File exists'] };
  if (/dev (nope|gone)\b/.test(line)) return { fail: [`Cannot find device "${/dev (\S+)/.exec(line)?.[1] ?? ''}"`] };
  if (line.startsWith('route del')) return { fail: ['RTNETLINK answers: No such process'] };
  return {};
}

const base = (extra: Partial<Iproute2Deps> = {}, reply = kernelish) => {
  const s = fakeSpawner(reply);
  const deps: Iproute2Deps = { spawn: s.spawn, checkNetns: async () => undefined, opTimeoutMs: 2_000, ...extra };
  return { ...s, deps };
};

t.test('protocol: ops of one tick go in one write, each with its own sentinel and result', async (t) => {
  const { deps, procs, argvs } = base();
  const nl = createIproute2Netlink(HOST, deps);
  const r = await Promise.allSettled([
    nl.addBridge(n('br1')),
    nl.addBridge(n('br0')),
    nl.setLink(n('nope'), { up: true }),
    nl.removeLink(n('gone')),
    nl.getLink(n('br0')),
    nl.getLink(n('nope')),
    nl.removeRoute({ dst: p('10.9.0.0/16') }),
  ]);
  t.same(r.map((x) => (x.status === 'fulfilled' ? (x.value === undefined ? 'ok' : (x.value as { name: string }).name) : (x.reason as TsnetError).code)), [
    'ok', 'ALREADY_EXISTS', 'NOT_FOUND', 'ok', 'br0', 'ok', 'ok',
  ]);
  t.same(argvs, [['ip', '-force', '-json', '-details', '-batch', '-']]);
  const proc = procs[0] as FakeIp;
  t.equal(proc.writes.length, 1, 'one write');
  t.equal(proc.lines.filter((l) => l.startsWith('tsnet-sentinel-')).length, 7, 'one sentinel per op');
  const e = (r[1] as PromiseRejectedResult).reason as TsnetError;
  t.match(e.message, /add bridge br0 \(netns host\): RTNETLINK answers: File exists/);
  t.same(e.details, { netns: 'host', command: 'link add name br0 type bridge', stderr: 'RTNETLINK answers: File exists' });
  await nl.close();
});

t.test('protocol: a namespace handle runs ip through nsenter', async (t) => {
  const { deps, argvs } = base();
  const nl = createIproute2Netlink(CTR, deps);
  await nl.getLink(n('lo'));
  t.same(argvs, [['nsenter', '--net=/run/netns/ctr', '--', 'ip', '-force', '-json', '-details', '-batch', '-']]);
  await nl.close();
});

t.test('protocol: stdout lagging behind stderr still reaches the right reader', async (t) => {
  const { deps, procs } = base({ eager: false });
  const nl = createIproute2Netlink(HOST, deps);
  const first = nl.getLink(n('lo'));
  await Promise.resolve();
  await Promise.resolve();
  await new Promise((r) => setImmediate(r));
  (procs[0] as FakeIp).stdoutLagMs = 30;
  (procs[0] as FakeIp).pieces = 7; // lines arrive split across many chunks
  const [lo, br, links, routes, none] = await Promise.all([first, nl.getLink(n('br0')), nl.listLinks(), nl.listRoutes({ family: 6 }), nl.getLink(n('nope'))]);
  t.equal(lo?.name, 'lo');
  t.equal(br?.kind, 'bridge');
  t.equal(links.length, 3);
  t.same(routes.map((r) => r.dst), ['fd00:1::/64', '::/0']);
  t.equal(none, undefined);
  await nl.close();
});

t.test('protocol: ensureBridge on an existing link checks its kind', async (t) => {
  const { deps } = base();
  const nl = createIproute2Netlink(HOST, deps);
  await nl.ensureBridge(n('br0'));
  await t.rejects(nl.ensureBridge(n('lo')), { code: 'ALREADY_EXISTS', message: /lo exists and is not a bridge/ });
  await nl.close();
});

t.test('protocol: ops run in call order even when an earlier one awaits a check', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const { deps, procs } = base({ checkNetns: async (ns) => (ns.kind === 'path' && ns.path === '/run/netns/slow' ? gate : undefined) });
  const nl = createIproute2Netlink(HOST, deps);
  const v = nl.addVeth({ name: n('vh0'), peer: n('eth0'), peerNetns: { kind: 'path', path: '/run/netns/slow' } });
  const s = nl.setLink(n('vh0'), { up: true });
  setTimeout(release, 20);
  await Promise.all([v, s]);
  const real = (procs[0] as FakeIp).lines.filter((l) => !l.startsWith('tsnet-sentinel-'));
  t.same(real, ['link add name vh0 type veth peer name eth0 netns /run/netns/slow', 'link set dev vh0 up']);
  await nl.close();
});

t.test('protocol: a missing peer namespace is NOT_FOUND and harms nothing else', async (t) => {
  const { deps, procs } = base({
    checkNetns: async (ns, field) => {
      if (ns.kind === 'path' && ns.path === '/run/netns/none') throw new TsnetError('NOT_FOUND', `${field}: ${ns.path} does not exist`);
    },
  });
  const nl = createIproute2Netlink(HOST, deps);
  const [v, s] = await Promise.allSettled([nl.addVeth({ name: n('vh0'), peer: n('eth0'), peerNetns: { kind: 'path', path: '/run/netns/none' } }), nl.addBridge(n('br5'))]);
  t.match(v, { status: 'rejected', reason: { code: 'NOT_FOUND', message: /peerNetns/ } });
  t.match(s, { status: 'fulfilled' });
  t.notOk((procs[0] as FakeIp).lines.some((l) => l.includes('vh0')), 'the veth line was never written');
  await nl.close();
});

t.test('protocol: ip dying mid-flight fails what is pending with UNAVAILABLE; the next op restarts it', async (t) => {
  const { deps, procs } = base({}, (line) => (line.startsWith('link add name x2') ? { fatal: 'Error: either "dev" is duplicate, or "x" is a garbage.' } : kernelish(line)));
  const nl = createIproute2Netlink(HOST, deps);
  const r = await Promise.allSettled([nl.addBridge(n('x1')), nl.addBridge(n('x2')), nl.addBridge(n('x3'))]);
  t.match(r[0], { status: 'fulfilled' }, 'completed before the death');
  t.match(r[1], { status: 'rejected', reason: { code: 'UNAVAILABLE', message: /exited with code 255: Error: either "dev" is duplicate/ } }, 'the line it died on says why');
  t.match(r[2], { status: 'rejected', reason: { code: 'UNAVAILABLE', message: /before the operation completed/ } });
  t.equal(nl.pid, undefined);
  await nl.addBridge(n('x4'));
  t.equal(procs.length, 2, 'restarted');
  t.equal(nl.pid, procs[1]?.pid);

  // killed with nothing to say
  const killed = nl.addBridge(n('x5'));
  (procs[1] as FakeIp).hang = true;
  await new Promise((r) => setImmediate(r));
  (procs[1] as FakeIp).kill('SIGKILL');
  await t.rejects(killed, { code: 'UNAVAILABLE', message: /killed by SIGKILL/ });
  await nl.addBridge(n('x6'));
  t.equal(procs.length, 3);
  await nl.close();
});

t.test('protocol: nsenter failing to enter a vanished namespace: removes succeed, the rest NOT_FOUND', async (t) => {
  const { deps } = base({ eager: false }, () => ({ fatal: 'nsenter: cannot open /run/netns/ctr: No such file or directory' }));
  const nl = createIproute2Netlink(CTR, deps);
  const r = await Promise.allSettled([nl.removeLink(n('eth0')), nl.setLink(n('eth0'), { up: true }), nl.removeAddr(n('eth0'), p('10.0.0.2/24'))]);
  t.same(r.map((x) => (x.status === 'fulfilled' ? 'ok' : (x.reason as TsnetError).code)), ['ok', 'NOT_FOUND', 'ok']);
  await nl.close();
});

t.test('protocol: a namespace that does not exist is not entered at all', async (t) => {
  const { deps, procs } = base({ checkNetns: async (ns, field) => { throw new TsnetError('NOT_FOUND', `${field}: ${ns.kind === 'path' ? ns.path : ''} does not exist`); } });
  const nl = createIproute2Netlink(CTR, deps); // eager start fails quietly
  await t.rejects(nl.getLink(n('eth0')), { code: 'NOT_FOUND' });
  await nl.removeLink(n('eth0'));
  t.equal(procs.length, 0, 'no process spawned');
  await nl.close();
});

t.test('protocol: a process that makes no progress is killed after opTimeoutMs', async (t) => {
  const { deps, procs } = base({ opTimeoutMs: 50 });
  const nl = createIproute2Netlink(HOST, deps);
  await nl.getLink(n('lo'));
  (procs[0] as FakeIp).hang = true;
  const t0 = Date.now();
  await t.rejects(nl.addBridge(n('h1')), { code: 'UNAVAILABLE', message: /timed out/ });
  t.ok(Date.now() - t0 < 1_000);
  t.equal((procs[0] as FakeIp).killedWith, 'SIGKILL');
  await nl.addBridge(n('h2'));
  await nl.close();
});

t.test('protocol: output that breaks the protocol kills the process instead of misattributing', async (t) => {
  const { deps, procs } = base({}, (line) => (line === 'link add name odd type bridge' ? { out: 'surprise' } : kernelish(line)));
  const nl = createIproute2Netlink(HOST, deps);
  const r = await Promise.allSettled([nl.addBridge(n('odd')), nl.getLink(n('lo'))]);
  t.match(r[0], { status: 'fulfilled' });
  t.match(r[1], { status: 'rejected', reason: { code: 'INTERNAL' } }, 'the read got unparsable output');
  t.equal((procs[0] as FakeIp).killedWith, 'SIGKILL');
  t.equal((await nl.getLink(n('lo')))?.name, 'lo', 'a fresh process works');
  await nl.close();
});

t.test('protocol: a failed spawn is UNAVAILABLE, and the next op tries again', async (t) => {
  const s = fakeSpawner(kernelish);
  let fail = true;
  const spawn = (argv: Argv): LongLived => {
    const ll = s.spawn(argv);
    if (fail) {
      fail = false;
      (ll.child as unknown as FakeIp).hang = true;
      setImmediate(() => (ll.child as unknown as FakeIp).emit('error', Object.assign(new Error('spawn ip ENOENT'), { code: 'ENOENT' })));
      return { ...ll, pid: -1 }; // as sys/exec reports a child that never got a pid
    }
    return ll;
  };
  const nl = createIproute2Netlink(HOST, { spawn, eager: false });
  await t.rejects(nl.addBridge(n('s1')), { code: 'UNAVAILABLE', message: /could not be started: spawn ip ENOENT/ });
  await nl.addBridge(n('s2'));
  await nl.close();
});

t.test('protocol: a process holding a deleted namespace open (ip < 6.12 leaks `netns PATH` fds) is retired', async (t) => {
  const ids = new Map<string, string>([['/run/netns/ctr', 'nsfs:1'], ['/run/netns/c2', 'nsfs:2']]);
  const { deps, procs } = base({ leakCheckMs: 10, netnsIdentity: async (path) => ids.get(path) });
  const nl = createIproute2Netlink(HOST, deps);
  await Promise.all([nl.addVeth({ name: n('vh0'), peer: n('eth0'), peerNetns: CTR }), nl.setLink(n('vh0'), { up: true })]);
  await nl.addVeth({ name: n('vh1'), peer: n('eth0'), peerNetns: { kind: 'path', path: '/run/netns/c2' } });
  await new Promise((r) => setTimeout(r, 40));
  t.equal(procs.length, 1, 'not retired while its namespaces live');
  ids.set('/run/netns/c2', 'tmpfs:77'); // deleted (unmounted): the path is a plain file now
  await new Promise((r) => setTimeout(r, 40));
  t.equal(procs.length, 2, 'a replacement was started');
  t.equal((procs[0] as FakeIp).stdin.writableEnded, true, 'the old one was told to exit');
  await nl.addBridge(n('br9'));
  t.ok((procs[1] as FakeIp).lines.includes('link add name br9 type bridge'), 'work goes to the replacement');
  await nl.close();
});

t.test('protocol: a process holding too many namespace files open is retired when idle', async (t) => {
  const { deps, procs } = base({ maxLeakedNetns: 3, netnsIdentity: async (path) => path });
  const nl = createIproute2Netlink(HOST, deps);
  for (const i of [1, 2]) await nl.addVeth({ name: n(`vh${i}`), peer: n('eth0'), peerNetns: { kind: 'path', path: `/run/netns/n${i}` } });
  t.equal(procs.length, 1);
  await nl.addVeth({ name: n('vh3'), peer: n('eth0'), peerNetns: { kind: 'path', path: '/run/netns/n3' } });
  t.equal(procs.length, 2, 'retired at the limit');
  await nl.close();
});

t.test('protocol: an idle namespace process is closed after idleMs and restarted on demand', async (t) => {
  const { deps, procs } = base({ idleMs: 20 });
  const nl = createIproute2Netlink(CTR, deps);
  await nl.getLink(n('lo'));
  await new Promise((r) => setTimeout(r, 80));
  t.equal(nl.pid, undefined);
  t.equal((procs[0] as FakeIp).stdin.writableEnded, true);
  await nl.getLink(n('lo'));
  t.equal(procs.length, 2);
  await nl.close();
});

t.test('close: finishes what is in flight, then refuses work', async (t) => {
  const { deps } = base();
  const nl = createIproute2Netlink(HOST, deps);
  const pending = nl.addBridge(n('c1'));
  const closing = nl.close();
  await pending;
  await closing;
  await t.rejects(nl.addBridge(n('c2')), { code: 'UNAVAILABLE', message: /closed/ });
  await nl.close();
});

t.test('cache: one handle per namespace; release and closeAll', async (t) => {
  const { deps, procs } = base();
  const nl = createIproute2NetlinkFor(deps);
  const h = nl(HOST);
  t.equal(nl({ kind: 'host' }), h);
  const c = nl({ kind: 'path', path: '/run/netns/ctr' });
  t.equal(nl(CTR), c);
  t.not(c, h);
  await Promise.all([h.getLink(n('lo')), c.getLink(n('lo'))]);
  await nl.release(CTR);
  t.not(nl(CTR), c, 'released: a new handle next time');
  await nl.closeAll();
  t.ok(procs.every((x) => x.stdin.writableEnded), 'every process told to exit');
  t.not(nl(HOST), h);
  await nl.closeAll();
});

t.test('validation happens before anything is queued', async (t) => {
  const { deps, procs } = base({ eager: false });
  const nl = createIproute2Netlink(HOST, deps);
  await t.rejects(nl.addAddr(n('lo'), '10.0.0.1' as never), { code: 'INVALID_CONFIG', details: { field: 'prefix' } });
  await t.rejects(nl.batch([{ op: 'removeLink', name: n('a') }, { op: 'removeLink', name: 'b c' as never }]), { code: 'INVALID_CONFIG', details: { field: 'ops[1].name' } });
  await t.rejects(nl.listRoutes({ dev: 'a\nb' as never }), { code: 'INVALID_CONFIG' });
  t.equal(procs.length, 0, 'no process');
  await nl.close();
});

t.test('a missing ip binary (real spawn) is UNAVAILABLE, every time', async (t) => {
  const nl = createIproute2Netlink(HOST, { ip: '/nonexistent/tsnet-ip', eager: false });
  await t.rejects(nl.getLink(n('lo')), { code: 'UNAVAILABLE', message: /could not be started/ });
  await t.rejects(nl.addBridge(n('b0')), { code: 'UNAVAILABLE' });
  await nl.close();
});
