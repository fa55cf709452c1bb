/**
 * DNS queries from inside a namespace (run with `nsenter --net=NS -- node --import tsx dns-tool.ts`):
 *   query JSON   {server, port, timeoutMs?, queries: DnsQuestion[]} → prints DnsResult[] as JSON
 *   fuzz JSON    {server, port, count, seed} → sends `count` random and mutated packets over UDP
 *                (paced: at most 2,000 unanswered at a time, bounded by count and 120 s), prints
 *                {sent, replies}
 * Only ever aimed at addresses inside namespaces a test created.
 */
import dgram from 'node:dgram';
import { ask, encodeQuestion, type DnsQuestion } from './dns-client.js';
import { fuzzPackets } from './dns-fuzz.js';

const [mode, raw] = process.argv.slice(2);
const args = JSON.parse(raw ?? '{}') as { server: string; port: number; timeoutMs?: number; queries?: DnsQuestion[]; count?: number; seed?: number };

if (mode === 'query') {
  const out = [];
  for (const q of args.queries ?? []) out.push(await ask(args.server, args.port, q, args.timeoutMs ?? 3000));
  process.stdout.write(`${JSON.stringify(out)}\n`);
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
    if (p.length === 0) continue;
    sock.send(p, args.port, args.server);
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
