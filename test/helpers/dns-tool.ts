/**
 * DNS queries from inside a namespace (run with `nsenter --net=NS -- node --import tsx dns-tool.ts`):
 *   query JSON   {server, port, timeoutMs?, queries: DnsQuestion[]} → prints DnsResult[] as JSON
 *   serve JSON   {addr, port, answer} → a fake upstream: answers every query over UDP and TCP with
 *                one A record `answer` (TTL 60), prints "listening"
 *   fuzz JSON    {server, port, count, seed} → sends `count` random and mutated packets over UDP
 *                (paced: at most 2,000 unanswered at a time, bounded by count and 120 s), prints
 *                {sent, replies}
 * Only ever aimed at addresses inside namespaces a test created.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { ask, encodeQuestion, type DnsQuestion } from './dns-client.js';
import { fuzzPackets } from './dns-fuzz.js';

const [mode, raw] = process.argv.slice(2);
const args = JSON.parse(raw ?? '{}') as { server: string; port: number; timeoutMs?: number; queries?: DnsQuestion[]; count?: number; seed?: number; addr?: string; answer?: string };

function fakeAnswer(m: Buffer): Buffer {
  const q = dnsPacket.decode(m);
  const name = q.questions?.[0]?.name ?? '';
  return dnsPacket.encode({ type: 'response', id: q.id ?? 0, flags: dnsPacket.RECURSION_AVAILABLE | dnsPacket.RECURSION_DESIRED, questions: q.questions ?? [], answers: [{ type: 'A', name, ttl: 60, data: args.answer ?? '192.0.2.77' }] });
}

if (mode === 'query') {
  const out = [];
  for (const q of args.queries ?? []) out.push(await ask(args.server, args.port, q, args.timeoutMs ?? 3000));
  process.stdout.write(`${JSON.stringify(out)}\n`);
} else if (mode === 'serve') {
  const addr = args.addr ?? '127.0.0.1';
  const udp = dgram.createSocket(addr.includes(':') ? 'udp6' : 'udp4');
  udp.on('message', (m, r) => {
    try {
      udp.send(fakeAnswer(m), r.port, r.address);
    } catch {
      // not a query we can read: no answer
    }
  });
  await new Promise<void>((r) => udp.bind(args.port, addr, r));
  const tcp = net.createServer((s) => {
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      const a = fakeAnswer(d.subarray(2, 2 + d.readUInt16BE(0)));
      const f = Buffer.alloc(a.length + 2);
      f.writeUInt16BE(a.length, 0);
      a.copy(f, 2);
      s.end(f);
    });
  });
  await new Promise<void>((r) => tcp.listen(args.port, addr, r));
  process.stdout.write('listening\n');
} else if (mode === 'fuzz') {
  const sock = dgram.createSocket(args.server.includes(':') ? 'udp6' : 'udp4');
  let replies = 0;
  sock.on('message', () => replies++);
  await new Promise<void>((r) => sock.bind(0, r));
  const seeds = [encodeQuestion({ name: 'web', type: 'A' }, 1), encodeQuestion({ name: 'example.com', type: 'AAAA', edns: 1232 }, 2), encodeQuestion({ name: '2.0.89.10.in-addr.arpa', type: 'PTR' }, 3)];
  const deadline = Date.now() + 120_000;
  let sent = 0;
  for (const p of fuzzPackets({ count: args.count ?? 1000, seeds, seed: args.seed ?? 1 })) {
    if (Date.now() > deadline) break;
    sock.send(p, args.port, args.server); // empty datagrams too
    sent++;
    if (sent % 500 === 0) await new Promise((r) => setImmediate(r)); // let the socket drain
  }
  await new Promise((r) => setTimeout(r, 300));
  sock.close();
  process.stdout.write(`${JSON.stringify({ sent, replies })}\n`);
} else {
  process.stderr.write(`unknown mode ${String(mode)}\n`);
  process.exitCode = 64;
}
