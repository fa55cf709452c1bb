import dnsPacket, { type DecodedPacket, type RecordType } from 'dns-packet';
import t from 'tap';
import { parseIpAddr, parsePrefix, type IpAddr } from '../core/net.js';
import { answerQuery, reverseAddr, type QueryContext, type Verdict } from './answer.js';
import { fuzzPackets } from '../test/helpers/dns-fuzz.js';
import { buildSnapshot, type DnsEndpointInput } from './records.js';

const ip = (s: string): IpAddr => parseIpAddr(s);
const ep = (networkId: string, sandboxId: string, addrs: string[], names: string[]): DnsEndpointInput => ({ networkId, sandboxId, addresses: addrs.map(ip), names });

const snap = buildSnapshot(1, [
  { id: 'n1', name: 'front', internal: false, subnets: [parsePrefix('10.89.1.0/24'), parsePrefix('fd00:1::/64')], gateways: [ip('10.89.1.1')] },
  { id: 'n2', name: 'back', internal: false, subnets: [parsePrefix('10.89.2.0/24')], gateways: [ip('10.89.2.1')] },
  { id: 'n3', name: 'sealed', internal: true, subnets: [parsePrefix('10.89.3.0/24')], gateways: [ip('10.89.3.1')] },
], [
  ep('n1', 'client', ['10.89.1.2'], ['client']),
  ep('n1', 'web1', ['10.89.1.3', 'fd00:1::3'], ['web1', 'webhost', 'www', 'abcdef012345']),
  ep('n1', 'web2', ['10.89.1.4'], ['web2', 'www']),
  ep('n1', 'both', ['10.89.1.5'], ['both']),
  ep('n2', 'both', ['10.89.2.5'], ['both']),
  ep('n2', 'db', ['10.89.2.6'], ['db']),
  ep('n2', 'bclient', ['10.89.2.7'], ['bclient']),
  ep('n3', 'lonely', ['10.89.3.2'], ['lonely']),
  ep('n9', 'ghost', ['10.99.0.2'], ['ghost']), // a network without DNS: ignored
]);

function makeCtx(over: Partial<QueryContext> = {}): QueryContext {
  const counters = new Map<string, number>();
  return {
    networkId: 'n1', source: ip('10.89.1.2'), transport: 'udp',
    rotate: (k) => {
      const n = counters.get(k) ?? 0;
      counters.set(k, n + 1);
      return n;
    },
    ...over,
  };
}

function query(name: string, type: RecordType | 'ANY', opts: { id?: number; edns?: { size: number; version?: number } } = {}): Buffer {
  return dnsPacket.encode({
    type: 'query', id: opts.id ?? 4242, flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: type as RecordType, class: 'IN' }],
    additionals: opts.edns ? [{ type: 'OPT', name: '.', udpPayloadSize: opts.edns.size, extendedRcode: 0, ednsVersion: opts.edns.version ?? 0, flags: 0, flag_do: false, options: [] }] : [],
  });
}

function reply(v: Verdict): DecodedPacket & { rcode?: string } {
  if (v.kind !== 'reply') throw new Error(`expected a reply, got ${v.kind}`);
  return dnsPacket.decode(v.packet) as DecodedPacket & { rcode?: string };
}
const data = (p: DecodedPacket): unknown[] => (p.answers ?? []).map((a) => ('data' in a ? a.data : undefined));

t.test('A, AAAA, hostname, short id, case-insensitive, NODATA vs NXDOMAIN', async (t) => {
  const ctx = makeCtx();
  const a = reply(answerQuery(snap, query('web1', 'A'), ctx));
  t.equal(a.id, 4242);
  t.equal(a.rcode, 'NOERROR');
  t.ok(a.flag_aa && a.flag_qr && a.flag_rd && a.flag_ra);
  t.same(data(a), ['10.89.1.3']);
  t.equal(a.answers?.[0]?.name, 'web1', 'the question name as asked');
  t.same(data(reply(answerQuery(snap, query('WebHost.', 'A'), ctx))), ['10.89.1.3']);
  t.same(data(reply(answerQuery(snap, query('abcdef012345', 'A'), ctx))), ['10.89.1.3']);
  t.same(data(reply(answerQuery(snap, query('web1', 'AAAA'), ctx))), ['fd00:1::3']);
  t.same(data(reply(answerQuery(snap, query('web1', 'ANY'), ctx))).sort(), ['10.89.1.3', 'fd00:1::3']);
  const nodata = reply(answerQuery(snap, query('web2', 'AAAA'), ctx));
  t.equal(nodata.rcode, 'NOERROR', 'name exists, no AAAA: NODATA');
  t.equal(nodata.answers?.length, 0);
  const mx = reply(answerQuery(snap, query('web2', 'MX'), ctx));
  t.equal(mx.rcode, 'NOERROR');
  t.equal(mx.answers?.length, 0);
  const nx = reply(answerQuery(snap, query('nosuch', 'A'), ctx));
  t.equal(nx.rcode, 'NXDOMAIN', 'a single-label unknown name is NXDOMAIN, never forwarded');
});

t.test('an alias of two containers rotates', async (t) => {
  const ctx = makeCtx();
  const seen = [0, 1, 2, 3].map(() => data(reply(answerQuery(snap, query('www', 'A'), ctx))));
  t.same(seen[0], ['10.89.1.3', '10.89.1.4']);
  t.same(seen[1], ['10.89.1.4', '10.89.1.3']);
  t.same(seen[2], seen[0]);
  t.same(seen[3], seen[1]);
  const v = answerQuery(snap, query('www', 'A'), ctx);
  t.equal(v.kind === 'reply' && v.cacheable, false, 'rotating answers are never cached');
  const one = answerQuery(snap, query('web2', 'A'), ctx);
  t.equal(one.kind === 'reply' && one.cacheable, true);
});

t.test('visibility: only the networks the client is attached to, arrival network first', async (t) => {
  const ctx = makeCtx();
  t.equal(reply(answerQuery(snap, query('db', 'A'), ctx)).rcode, 'NXDOMAIN', 'db is on another network');
  t.same(data(reply(answerQuery(snap, query('both', 'A'), ctx))), ['10.89.1.5']);
  const fromBack = makeCtx({ networkId: 'n2', source: ip('10.89.2.7') });
  t.same(data(reply(answerQuery(snap, query('both', 'A'), fromBack))), ['10.89.2.5']);
  t.equal(reply(answerQuery(snap, query('web1', 'A'), fromBack)).rcode, 'NXDOMAIN');
  const multi = makeCtx({ networkId: 'n2', source: ip('10.89.2.5') });
  t.same(data(reply(answerQuery(snap, query('web1', 'A'), multi))), ['10.89.1.3'], 'a container on two networks sees both');
  t.equal(reply(answerQuery(snap, query('ghost', 'A'), ctx)).rcode, 'NXDOMAIN', 'networks without DNS are not served');
});

t.test('unknown sources get nothing', async (t) => {
  t.equal(answerQuery(snap, query('web1', 'A'), makeCtx({ source: ip('10.89.1.200') })).kind, 'drop', 'inside the subnet, no endpoint');
  t.equal(answerQuery(snap, query('web1', 'A'), makeCtx({ source: ip('192.0.2.1') })).kind, 'drop', 'outside');
  t.equal(answerQuery(snap, query('web1', 'A'), makeCtx({ source: ip('10.89.2.7') })).kind, 'drop', 'an endpoint of another network, at this gateway');
  t.equal(answerQuery(snap, query('web1', 'A'), makeCtx({ networkId: 'n9' })).kind, 'drop', 'unknown network');
});

t.test('PTR', async (t) => {
  const ctx = makeCtx();
  t.equal(reverseAddr('3.1.89.10.in-addr.arpa.'), '10.89.1.3');
  t.equal(reverseAddr('3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa'), 'fd00:1::3');
  t.equal(reverseAddr('1.2.3.in-addr.arpa'), undefined);
  t.equal(reverseAddr('300.2.3.4.in-addr.arpa'), undefined);
  t.equal(reverseAddr('example.com'), undefined);
  t.same(data(reply(answerQuery(snap, query('3.1.89.10.in-addr.arpa', 'PTR'), ctx))), ['web1']);
  t.same(data(reply(answerQuery(snap, query('3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa', 'PTR'), ctx))), ['web1']);
  t.equal(reply(answerQuery(snap, query('99.1.89.10.in-addr.arpa', 'PTR'), ctx)).rcode, 'NXDOMAIN', 'our subnet, no endpoint');
  t.equal(reply(answerQuery(snap, query('6.2.89.10.in-addr.arpa', 'PTR'), ctx)).rcode, 'NXDOMAIN', 'another network: not visible');
  t.equal(answerQuery(snap, query('1.2.0.192.in-addr.arpa', 'PTR'), ctx).kind, 'forward', 'foreign addresses go upstream');
});

t.test('forwarding and internal networks', async (t) => {
  const v = answerQuery(snap, query('example.com', 'A', { id: 77 }), makeCtx());
  t.equal(v.kind, 'forward');
  if (v.kind === 'forward') {
    const sf = dnsPacket.decode(v.servfail) as DecodedPacket & { rcode?: string };
    t.equal(sf.rcode, 'SERVFAIL');
    t.equal(sf.id, 77);
    t.equal(sf.questions?.[0]?.name, 'example.com');
  }
  const internal = makeCtx({ networkId: 'n3', source: ip('10.89.3.2') });
  t.same(data(reply(answerQuery(snap, query('lonely', 'A'), internal))), ['10.89.3.2'], 'internal networks answer their names');
  t.equal(reply(answerQuery(snap, query('example.com', 'A'), internal)).rcode, 'REFUSED', 'and never forward');
  t.equal(reply(answerQuery(snap, query('1.2.0.192.in-addr.arpa', 'PTR'), internal)).rcode, 'REFUSED');
});

t.test('EDNS0 and truncation', async (t) => {
  const eps = Array.from({ length: 50 }, (_, i) => ep('n1', `s${i}`, [`10.89.1.${i + 10}`], [`s${i}`, 'crowd']));
  const big = buildSnapshot(2, [{ id: 'n1', name: 'front', internal: false, subnets: [parsePrefix('10.89.1.0/24')], gateways: [ip('10.89.1.1')] }], eps);
  const ctx = makeCtx({ source: ip('10.89.1.10') });
  const udp = reply(answerQuery(big, query('crowd', 'A'), ctx));
  t.ok(udp.flag_tc, '50 A records do not fit in 512 bytes: TC');
  t.equal(udp.answers?.length, 0);
  const tcp = reply(answerQuery(big, query('crowd', 'A'), { ...ctx, transport: 'tcp' }));
  t.notOk(tcp.flag_tc);
  t.equal(tcp.answers?.length, 50, 'TCP carries all of them');
  const edns = reply(answerQuery(big, query('crowd', 'A', { edns: { size: 1232 } }), ctx));
  t.notOk(edns.flag_tc, 'fits in the 1232 bytes the client allows');
  t.equal(edns.answers?.length, 50);
  const opt = edns.additionals?.find((a) => a.type === 'OPT');
  t.ok(opt, 'OPT echoed');
  const tiny = reply(answerQuery(big, query('crowd', 'A', { edns: { size: 100 } }), ctx));
  t.ok(tiny.flag_tc, 'sizes below 512 count as 512');
  t.equal(reply(answerQuery(big, query('s1', 'A'), ctx)).additionals?.length, 0, 'no OPT without EDNS');
  const badvers = answerQuery(big, query('s1', 'A', { edns: { size: 1232, version: 1 } }), ctx);
  if (badvers.kind !== 'reply') throw new Error('expected a reply');
  const b = dnsPacket.decode(badvers.packet);
  const bo = b.additionals?.find((a) => a.type === 'OPT');
  t.equal(bo && 'extendedRcode' in bo ? bo.extendedRcode : undefined, 1, 'BADVERS');
  t.equal(b.answers?.length, 0);
});

t.test('malformed and unexpected packets', async (t) => {
  const ctx = makeCtx();
  t.equal(answerQuery(snap, Buffer.alloc(5), ctx).kind, 'drop', 'shorter than a header');
  const resp = query('web1', 'A');
  resp.writeUInt16BE(resp.readUInt16BE(2) | 0x8000, 2);
  t.equal(answerQuery(snap, resp, ctx).kind, 'drop', 'responses are never answered (no loops)');
  const cut = query('web1', 'A').subarray(0, 16);
  const formerr = reply(answerQuery(snap, cut, ctx));
  t.equal(formerr.rcode, 'FORMERR');
  t.equal(formerr.id, 4242);
  const two = dnsPacket.encode({ type: 'query', id: 9, questions: [{ name: 'a', type: 'A' }, { name: 'b', type: 'A' }] });
  t.equal(reply(answerQuery(snap, two, ctx)).rcode, 'FORMERR', 'two questions');
  const notify = query('web1', 'A');
  notify.writeUInt16BE(notify.readUInt16BE(2) | (4 << 11), 2);
  t.equal(reply(answerQuery(snap, notify, ctx)).rcode, 'NOTIMP', 'opcode NOTIFY');
});

t.test(`fuzz: ${1_000_000} random and mutated packets through the answerer`, async (t) => {
  const seeds = [query('web1', 'A'), query('www', 'AAAA', { edns: { size: 1232 } }), query('3.1.89.10.in-addr.arpa', 'PTR'), query('example.com', 'MX')];
  const ctx = makeCtx();
  const counts = { reply: 0, forward: 0, drop: 0 };
  for (const p of fuzzPackets({ count: 1_000_000, seeds, seed: 1 })) {
    const v = answerQuery(snap, p, ctx);
    counts[v.kind]++;
    if (v.kind === 'reply') dnsPacket.decode(v.packet); // every reply we make is well-formed
  }
  t.ok(counts.reply > 1000 && counts.drop > 1000, `a mix of verdicts: ${JSON.stringify(counts)}`);
  t.same(data(reply(answerQuery(snap, query('web1', 'A'), ctx))), ['10.89.1.3'], 'still answers');
});
