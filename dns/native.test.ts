// The dns-fast addon on its own (native/dns-fast.c), over a loopback socket: argument checks, the
// byte-exact replay with the id patched, the entry and byte bounds, clear, stop.
import dgram from 'node:dgram';
import t from 'tap';
import { loadTestAddon } from '../test/helpers/dns-native.js';
import type { NativeHandle } from './server.js';

const addon = loadTestAddon();

function handleOf(sock: dgram.Socket): { fd: number; recvStop(): void } {
  const sym = Object.getOwnPropertySymbols(sock).find((x) => x.description === 'state symbol');
  const h = sym !== undefined ? (sock as unknown as Record<symbol, { handle?: { fd: number; recvStop(): void } }>)[sym]?.handle : undefined;
  if (h === undefined) throw new Error('no handle');
  return h;
}
const fdOf = (sock: dgram.Socket): number => handleOf(sock).fd;

/** The addon serving `srv` (libuv stops reading it); each miss is answered by echoing it as a response, cacheable. */
function serveEcho(srv: dgram.Socket, seen: { id: number; address: string; port: number }[], maxEntries: number): NativeHandle {
  const h = addon.open(fdOf(srv), (q, address, port, sa) => {
    seen.push({ id: q.readUInt16BE(0), address, port });
    const reply = Buffer.from(q);
    reply[2] = (reply[2] ?? 0) | 0x80;
    addon.reply(h, sa, q, reply, true);
  }, maxEntries, 1 << 20, 64);
  handleOf(srv).recvStop();
  return h;
}

const asker = (cli: dgram.Socket, port: number, addr: string) => (q: Buffer): Promise<Buffer> => new Promise((resolve) => {
  cli.once('message', (m) => resolve(m));
  cli.send(q, port, addr);
});

/** struct sockaddr_in for 127.0.0.1:port (family in host order, little-endian here). */
function sockaddr4(port: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(2, 0);
  b.writeUInt16BE(port, 2);
  b.set([127, 0, 0, 1], 4);
  return b;
}

const bind = async (): Promise<dgram.Socket> => {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
};

const query = (id: number, name: string): Buffer => {
  const labels = Buffer.concat([...name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0])]);
  const b = Buffer.alloc(12 + labels.length + 4);
  b.writeUInt16BE(id, 0);
  b.writeUInt16BE(0x0100, 2);
  b.writeUInt16BE(1, 4);
  labels.copy(b, 12);
  b.writeUInt16BE(1, 12 + labels.length);
  b.writeUInt16BE(1, 14 + labels.length);
  return b;
};

t.test('bad arguments are errors that say which', async (t) => {
  const srv = await bind();
  t.throws(() => addon.open(-1, () => undefined, 1, 1, 1), /fd must be/);
  t.throws(() => addon.open(fdOf(srv), () => undefined, 0, 1, 1), /maxEntries/);
  t.throws(() => addon.open(fdOf(srv), () => undefined, 1, 0, 1), /maxBytes/);
  t.throws(() => addon.open(fdOf(srv), () => undefined, 1, 1, 0), /queueMax/);
  t.throws(() => addon.stop({} as NativeHandle), /not a handle/);
  srv.close();
});

t.test('misses reach JS with the source; replies JS installs are replayed with the id patched; bounds empty the cache', async (t) => {
  const srv = await bind();
  srv.on('message', () => t.fail('libuv must not read the socket'));
  const seen: { id: number; address: string; port: number }[] = [];
  const h = serveEcho(srv, seen, 3);
  const cli = await bind();
  const ask = asker(cli, srv.address().port, '127.0.0.1');
  const a = await ask(query(7, 'a.test'));
  t.equal(a.readUInt16BE(0), 7);
  t.same(seen.map((s) => [s.id, s.address, s.port]), [[7, '127.0.0.1', cli.address().port]], 'the miss, with its source');
  const b = await ask(query(8, 'a.test'));
  t.equal(b.readUInt16BE(0), 8, 'id patched');
  t.same(b.subarray(2), a.subarray(2), 'the same bytes after the id');
  t.equal(seen.length, 1, 'served from the cache');
  t.match(addon.stats(h), { hits: 1, misses: 1, installed: 1, entries: 1 });
  for (const n of ['b', 'c', 'd']) await ask(query(9, `${n}.test`));
  t.match(addon.stats(h), { installed: 4, clears: 1, entries: 1 }, 'the 4th entry beyond maxEntries=3 emptied the cache first');
  await ask(query(10, 'a.test'));
  t.equal(seen.length, 5, 'a.test was forgotten: a miss again');
  addon.clear(h);
  t.equal(addon.stats(h).entries, 0, 'clear');
  await ask(query(11, 'd.test'));
  t.equal(seen.length, 6, 'after clear: a miss');
  addon.stop(h);
  addon.stop(h);
  t.equal(addon.reply(h, sockaddr4(cli.address().port), query(1, 'x.test'), query(1, 'x.test'), true), false, 'stopped: reply sends nothing');
  cli.close();
  srv.close();
});

t.test('the byte bound', async (t) => {
  const srv = await bind();
  const h = addon.open(fdOf(srv), () => undefined, 1000, 400, 8);
  const sa = sockaddr4(9); // discard port on loopback: nothing listens, the send still succeeds
  const big = Buffer.alloc(150, 1);
  for (let i = 0; i < 3; i++) addon.reply(h, sa, query(i, `n${i}.test`), big, true);
  const st = addon.stats(h);
  t.equal(st.installed, 3);
  t.equal(st.clears, 1, 'the third entry would pass 400 bytes: emptied first');
  t.ok(st.bytes <= 400 && st.entries === 1, `bytes ${st.bytes}, entries ${st.entries}`);
  addon.stop(h);
  srv.close();
});

t.test('IPv6: the key and the reply address are the client\'s v6 address', async (t) => {
  const srv = dgram.createSocket('udp6');
  await new Promise<void>((r) => srv.bind(0, '::1', r));
  const seen: { id: number; address: string; port: number }[] = [];
  const h = serveEcho(srv, seen, 100);
  const cli = dgram.createSocket('udp6');
  await new Promise<void>((r) => cli.bind(0, '::1', r));
  const ask = asker(cli, srv.address().port, '::1');
  const a = await ask(query(21, 'v6.test'));
  const b = await ask(query(22, 'v6.test'));
  t.same(seen.map((x) => x.address), ['::1'], 'one miss, from ::1');
  t.equal(b.readUInt16BE(0), 22);
  t.same(b.subarray(2), a.subarray(2));
  t.match(addon.stats(h), { hits: 1, misses: 1 });
  addon.stop(h);
  cli.close();
  srv.close();
});
