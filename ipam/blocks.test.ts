import t from 'tap';
import { parseIpAddr, parsePrefix, type IpAddr } from '../core/net.js';
import { blockLenFor, blockOf, blocksOf, blockSet, subnetSet } from './blocks.js';
import { reserveNext, setCapacity, type ReservationPort } from './range-set.js';

const p = parsePrefix;
const a = parseIpAddr;

function memoryPort(): ReservationPort & { held: Map<string, string> } {
  const held = new Map<string, string>();
  let cursor: IpAddr | undefined;
  return {
    held,
    reserve: async (addr, owner) => (held.has(addr) ? false : (held.set(addr, owner), true)),
    release: async (addr) => void held.delete(addr),
    list: async () => [...held].map(([addr, owner]) => ({ addr: addr as IpAddr, owner })),
    getCursor: async () => cursor,
    setCursor: async (x) => {
      cursor = x;
    },
  };
}

t.test('blocks: /26 of a /24 (four), the whole range when smaller, aligned', async (t) => {
  t.equal(blockLenFor(p('10.91.7.0/24')), 26);
  t.equal(blockLenFor(p('10.91.7.0/28')), 28);
  t.equal(blockLenFor(p('10.91.0.0/16'), p('10.91.4.0/27')), 27);
  t.same(blocksOf(p('10.91.7.0/24'), undefined, 26), ['10.91.7.0/26', '10.91.7.64/26', '10.91.7.128/26', '10.91.7.192/26']);
  t.equal(blockOf(a('10.91.7.130'), 26), '10.91.7.128/26');
});

t.test('a host allocates from its blocks only: the gateway, network and broadcast addresses never', async (t) => {
  const subnet = p('10.91.7.0/24');
  const gw = a('10.91.7.1');
  const first = blockSet(subnet, gw, [p('10.91.7.0/26')]);
  t.equal(setCapacity(first), 62n, '64 minus the network address and the gateway');
  const last = blockSet(subnet, gw, [p('10.91.7.192/26')]);
  t.equal(setCapacity(last), 63n, 'the broadcast address is not handed out');
  const port = memoryPort();
  const exhausted = () => new Error('full') as never;
  const got = await Promise.all(Array.from({ length: 62 }, (_, i) => reserveNext(first, port, `ep${i}`, { label: 'b', exhausted })));
  const addrs = got.map((g) => g.addr);
  t.equal(new Set(addrs).size, 62, 'concurrent requests get distinct addresses');
  t.notOk(addrs.includes(gw), 'never the gateway');
  t.ok(addrs.every((x) => x.startsWith('10.91.7.') && Number(x.split('.')[3]) < 64), 'all inside the block');
  await t.rejects(reserveNext(first, port, 'one-more', { label: 'b', exhausted }), /full/, 'a full block is exhausted (a new block is then leased)');
  t.equal(setCapacity(subnetSet(subnet, gw)), 253n, 'a static address may lie in any block');
});
