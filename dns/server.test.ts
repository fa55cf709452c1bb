// The resolver's sockets over loopback, without root: listeners on 127.0.0.x at a random high
// port, fake upstreams on loopback.
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import t from 'tap';
import { nullLogger } from '../core/log.js';
import { parseIpAddr, parsePrefix, type IpAddr } from '../core/net.js';
import { ask, encodeQuestion, exchangeUdp } from '../test/helpers/dns-client.js';
import { fuzzPackets } from '../test/helpers/dns-fuzz.js';
import { buildSnapshot, type DnsEndpointInput } from './records.js';
import { loadTestAddon } from '../test/helpers/dns-native.js';
import { createDnsServer, type DnsNativeAddon, type DnsServer, type Upstream } from './server.js';

const ip = (s: string): IpAddr => parseIpAddr(s);
const ep = (networkId: string, sandboxId: string, addrs: string[], names: string[]): DnsEndpointInput => ({ networkId, sandboxId, addresses: addrs.map(ip), names });
const nets = (withN2 = true) => [
  { id: 'n1', name: 'one', internal: false, subnets: [parsePrefix('127.0.0.0/8')], gateways: [ip('127.0.0.1')] },
  ...(withN2 ? [{ id: 'n2', name: 'two', internal: false, subnets: [parsePrefix('127.0.0.0/8')], gateways: [ip('127.0.0.3')] }] : []),
];
const baseEps = [
  ep('n1', 'client', ['127.0.0.1'], ['client']),
  ep('n1', 'web1', ['127.0.0.11'], ['web1', 'www']),
  ep('n1', 'web2', ['127.0.0.12'], ['web2', 'www']),
  ep('n2', 'other', ['127.0.0.21'], ['other']),
];

/** A fake upstream: answers every A query with 192.0.2.7 (UDP and TCP) after `delayMs`; records the ids it saw. */
async function fakeUpstream(port: number, opts: { delayMs?: number; silent?: boolean } = {}): Promise<{ ids: number[]; close(): Promise<void> }> {
  const ids: number[] = [];
  const answer = (m: Buffer): Buffer => {
    const q = dnsPacket.decode(m);
    ids.push(q.id ?? -1);
    return dnsPacket.encode({ type: 'response', id: q.id ?? 0, flags: dnsPacket.RECURSION_AVAILABLE, questions: q.questions ?? [], answers: [{ type: 'A', name: q.questions?.[0]?.name ?? '', ttl: 60, data: '192.0.2.7' }] });
  };
  const udp = dgram.createSocket('udp4');
  udp.on('message', (m, r) => {
    if (opts.silent === true) return;
    setTimeout(() => udp.send(answer(m), r.port, r.address), opts.delayMs ?? 0);
  });
  await new Promise<void>((r) => udp.bind(port, '127.0.0.1', r));
  const tcp = net.createServer((s) => {
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      if (opts.silent === true) return;
      const a = answer(d.subarray(2, 2 + d.readUInt16BE(0)));
      const f = Buffer.alloc(a.length + 2);
      f.writeUInt16BE(a.length, 0);
      a.copy(f, 2);
      s.end(f);
    });
  });
  await new Promise<void>((r) => tcp.listen(port, '127.0.0.1', r));
  return {
    ids,
    close: async () => {
      udp.close();
      await new Promise((r) => tcp.close(r));
    },
  };
}

const port = (): number => 20_000 + Math.floor(Math.random() * 30_000);

async function withServer(upstreams: Upstream[], fn: (s: DnsServer, port: number) => Promise<void>, opts: { timeoutMs?: number; maxInFlight?: number; native?: DnsNativeAddon } = {}): Promise<void> {
  const p = port();
  const s = createDnsServer({ log: nullLogger, port: p, upstreams: () => upstreams, randomId: () => Math.floor(Math.random() * 65536), ...opts });
  try {
    const r = await s.update(buildSnapshot(1, nets(), baseEps));
    if (r.failed.length > 0) throw new Error(`could not listen: ${r.failed.join(', ')}`);
    await fn(s, p);
  } finally {
    await s.close();
  }
}

// Every case runs twice: answered in JS, and with the native UDP fast path (native/dns-fast.c).
const ADDON = loadTestAddon();
for (const mode of ['js', 'native'] as const) {
  const withNative = mode === 'native' ? { native: ADDON } : {};
  t.test(`${mode}: local names over UDP and TCP, rotation, PTR, NXDOMAIN`, async (t) => {
    await withServer([], async (_s, p) => {
      const a = await ask('127.0.0.1', p, { name: 'web1', type: 'A' });
      t.same(a.answers, [{ type: 'A', data: '127.0.0.11' }]);
      const r1 = await ask('127.0.0.1', p, { name: 'www', type: 'A' });
      const r2 = await ask('127.0.0.1', p, { name: 'www', type: 'A' });
      t.same(r1.answers?.map((x) => x.data), ['127.0.0.11', '127.0.0.12']);
      t.same(r2.answers?.map((x) => x.data), ['127.0.0.12', '127.0.0.11'], 'round robin');
      const tcp = await ask('127.0.0.1', p, { name: 'web2', type: 'A', tcp: true });
      t.same(tcp.answers, [{ type: 'A', data: '127.0.0.12' }], 'TCP');
      const ptr = await ask('127.0.0.1', p, { name: '11.0.0.127.in-addr.arpa', type: 'PTR' });
      t.same(ptr.answers, [{ type: 'PTR', data: 'web1' }]);
      t.equal((await ask('127.0.0.1', p, { name: 'other', type: 'A' })).rcode, 'NXDOMAIN', 'a name on another network');
      t.equal((await ask('127.0.0.1', p, { name: 'web1', type: 'A' })).rcode, 'NOERROR', 'from the cache as well');
    }, withNative);
  });

  t.test(`${mode}: a source that is no endpoint of the network gets nothing, over UDP or TCP`, async (t) => {
    await withServer([], async (s, p) => {
      const udp = await ask('127.0.0.3', p, { name: 'other', type: 'A' }, 500);
      t.equal(udp.error, 'timeout');
      const tcp = await ask('127.0.0.3', p, { name: 'other', type: 'A', tcp: true }, 2000);
      t.equal(tcp.error, 'closed', 'the TCP connection is closed');
      t.ok(s.stats().dropped >= 2);
    }, withNative);
  });

  t.test(`${mode}: forwarding: random ids, UDP and TCP, upstream down → SERVFAIL, never a hang`, async (t) => {
    // A port where nothing listens (bound, then released): the upstream that is down.
    const upPort = await new Promise<number>((r) => {
      const probe = dgram.createSocket('udp4');
      probe.bind(0, '127.0.0.1', () => {
        const pp = probe.address().port;
        probe.close(() => r(pp));
      });
    });
    const upstreamPort = port();
    const good = await fakeUpstream(upstreamPort);
    t.teardown(() => good.close());
    await withServer([{ host: ip('127.0.0.1'), port: upPort }, { host: ip('127.0.0.1'), port: upstreamPort }], async (_s, p) => {
      const r = await ask('127.0.0.1', p, { name: 'example.com', type: 'A' });
      t.same(r.answers, [{ type: 'A', data: '192.0.2.7' }], 'after the dead upstream, the live one answers');
      const tcp = await ask('127.0.0.1', p, { name: 'example.org', type: 'A', tcp: true });
      t.same(tcp.answers, [{ type: 'A', data: '192.0.2.7' }], 'over TCP');
      t.equal(good.ids.length, 2);
      t.not(good.ids[0], r.id, 'the upstream sees another id than the client used');
    }, withNative);
    await withServer([{ host: ip('127.0.0.1'), port: upPort }], async (_s, p) => {
      const r = await ask('127.0.0.1', p, { name: 'example.com', type: 'A' }, 5000);
      t.equal(r.rcode, 'SERVFAIL', 'the only upstream is down');
    }, withNative);
    const silentPort = port();
    const silent = await fakeUpstream(silentPort, { silent: true });
    t.teardown(() => silent.close());
    await withServer([{ host: ip('127.0.0.1'), port: silentPort }], async (s, p) => {
      const r = await ask('127.0.0.1', p, { name: 'example.com', type: 'A' }, 5000);
      t.equal(r.rcode, 'SERVFAIL', 'an upstream that never answers: SERVFAIL when the budget is spent');
      const burst = await Promise.all([1, 2, 3, 4, 5].map((i) => ask('127.0.0.1', p, { name: `x${i}.example`, type: 'A' }, 5000)));
      t.same(burst.map((b) => b.rcode), ['SERVFAIL', 'SERVFAIL', 'SERVFAIL', 'SERVFAIL', 'SERVFAIL']);
      t.equal(s.stats().overload, 3, 'beyond 2 in flight: SERVFAIL at once');
    }, { timeoutMs: 400, maxInFlight: 2, ...withNative });
  });

  t.test(`${mode}: update: new names at once, removed names gone, sockets kept, in-flight queries answered`, async (t) => {
    const slowPort = port();
    const slow = await fakeUpstream(slowPort, { delayMs: 300 });
    t.teardown(() => slow.close());
    await withServer([{ host: ip('127.0.0.1'), port: slowPort }], async (s, p) => {
      t.equal((await ask('127.0.0.1', p, { name: 'newbie', type: 'A' })).rcode, 'NXDOMAIN');
      const pending = ask('127.0.0.1', p, { name: 'slow.example', type: 'A' });
      await new Promise((r) => setTimeout(r, 50));
      await s.update(buildSnapshot(2, nets(), [...baseEps.filter((e) => e.sandboxId !== 'web1'), ep('n1', 'newbie', ['127.0.0.13'], ['newbie'])]));
      t.same((await pending).answers, [{ type: 'A', data: '192.0.2.7' }], 'the query in flight during the reload is answered');
      t.same((await ask('127.0.0.1', p, { name: 'newbie', type: 'A' })).answers, [{ type: 'A', data: '127.0.0.13' }]);
      t.equal((await ask('127.0.0.1', p, { name: 'web1', type: 'A' })).rcode, 'NXDOMAIN', 'removed');
      t.same((await ask('127.0.0.1', p, { name: 'www', type: 'A' })).answers?.map((a) => a.data), ['127.0.0.12']);
      t.same(s.stats().listeners, ['127.0.0.1', '127.0.0.3']);
      await s.update(buildSnapshot(3, nets(false), baseEps));
      t.same(s.stats().listeners, ['127.0.0.1'], 'a network gone: its listener closed');
      t.equal(s.stats().version, 3);
    }, withNative);
  });
}

// The native path itself: what it served, that a swap clears it at once, that it never answers
// what JS would not; and (both paths) that malformed input and a close do no harm.
const udpExchange = (server: string, p: number, msg: Buffer, timeoutMs = 1000): Promise<Buffer | undefined> => exchangeUdp(server, p, msg, timeoutMs);

t.test('native: repeated queries are served by the addon, byte for byte what JS answered, with the client id', async (t) => {
  await withServer([], async (s, p) => {
    const first = await udpExchange('127.0.0.1', p, encodeQuestion({ name: 'web1', type: 'A' }, 1));
    const replies: Buffer[] = [];
    for (let i = 0; i < 50; i++) replies.push((await udpExchange('127.0.0.1', p, encodeQuestion({ name: 'web1', type: 'A' }, 1000 + i))) ?? Buffer.alloc(0));
    if (first === undefined) throw new Error('no first answer');
    t.ok(replies.every((r, i) => r.readUInt16BE(0) === 1000 + i && r.subarray(2).equals(first.subarray(2))), 'same bytes after the id, the id patched');
    const n = s.stats().native;
    t.equal(n?.listeners, 2, 'the addon serves both UDP listeners');
    t.ok((n?.hits ?? 0) >= 50, `native hits ${n?.hits ?? 0}`);
    t.equal(n?.misses, 1, 'only the first query reached JS');
    t.equal(s.stats().queries, 1);
    // Not cacheable: several addresses in rotation keep rotating through JS.
    const a = await ask('127.0.0.1', p, { name: 'www', type: 'A' });
    const b = await ask('127.0.0.1', p, { name: 'www', type: 'A' });
    t.same(b.answers?.map((x) => x.data), [...(a.answers?.map((x) => x.data) ?? [])].reverse(), 'round robin still rotates');
    // TCP stays in JS.
    t.same((await ask('127.0.0.1', p, { name: 'web1', type: 'A', tcp: true })).answers, [{ type: 'A', data: '127.0.0.11' }]);
  }, { native: ADDON });
});

t.test('native: a snapshot swap clears the cache at once (a removed name stops resolving)', async (t) => {
  await withServer([], async (s, p) => {
    for (let i = 0; i < 5; i++) t.same((await ask('127.0.0.1', p, { name: 'web1', type: 'A' })).answers, [{ type: 'A', data: '127.0.0.11' }]);
    t.ok((s.stats().native?.hits ?? 0) >= 4, 'served from the native cache');
    await s.update(buildSnapshot(2, nets(), baseEps.filter((e) => e.sandboxId !== 'web1')));
    t.equal((await ask('127.0.0.1', p, { name: 'web1', type: 'A' })).rcode, 'NXDOMAIN', 'removed: never the cached answer');
    // And the client that the snapshot no longer knows gets nothing, even for a cached query.
    t.same((await ask('127.0.0.1', p, { name: 'web2', type: 'A' })).answers, [{ type: 'A', data: '127.0.0.12' }]);
    await s.update(buildSnapshot(3, nets(), baseEps.filter((e) => e.sandboxId !== 'client')));
    t.equal((await ask('127.0.0.1', p, { name: 'web2', type: 'A' }, 500)).error, 'timeout', 'a client gone from the snapshot: no answer');
  }, { native: ADDON });
});

for (const mode of ['js', 'native'] as const) t.test(`${mode}: fuzz, short and oversized datagrams, then still answering; close twice`, async (t) => {
  const p = port();
  const s = createDnsServer({ log: nullLogger, port: p, upstreams: () => [], randomId: () => 1, ...(mode === 'native' ? { native: ADDON } : {}) });
  await s.update(buildSnapshot(1, nets(), baseEps));
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  let replies = 0;
  sock.on('message', () => replies++);
  const seeds = [encodeQuestion({ name: 'web1', type: 'A' }, 1), encodeQuestion({ name: 'example.com', type: 'AAAA', edns: 1232 }, 2), encodeQuestion({ name: '11.0.0.127.in-addr.arpa', type: 'PTR' }, 3)];
  let sent = 0;
  for (const pkt of fuzzPackets({ count: 20_000, seeds, seed: 5 })) {
    sock.send(pkt, p, '127.0.0.1');
    if (++sent % 500 === 0) await new Promise((r) => setImmediate(r));
  }
  sock.send(Buffer.alloc(5000, 0), p, '127.0.0.1');
  sock.send(Buffer.alloc(3), p, '127.0.0.1');
  // The server shares this process's event loop: let it work through its socket's backlog.
  for (let last = -1, n = 0; n < 100 && s.stats().queries !== last; n++) {
    last = s.stats().queries;
    await new Promise((r) => setTimeout(r, 300));
  }
  sock.close();
  t.comment(`fuzz: ${sent} sent, ${replies} replies, native ${JSON.stringify(s.stats().native)}`);
  if (mode === 'native') t.ok((s.stats().native?.ignored ?? 0) >= 2, 'short and oversized datagrams dropped in C');
  else t.ok(s.stats().dropped >= 1, 'a short datagram dropped');
  const alive = await ask('127.0.0.1', p, { name: 'web1', type: 'A' });
  t.same(alive.answers, [{ type: 'A', data: '127.0.0.11' }], `still answering (${JSON.stringify(alive)}, ${JSON.stringify(s.stats())})`);
  await s.close();
  await s.close();
  t.equal((await ask('127.0.0.1', p, { name: 'web1', type: 'A' }, 300)).error, 'timeout', 'closed: nothing answers');
});
