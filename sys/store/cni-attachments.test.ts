import t from 'tap';
import net from 'node:net';
import { mkdtemp, readdir, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IpAddr, Prefix } from '../../core/net.js';
import { daemonCall, daemonNotify } from '../daemon-client.js';
import { cniAttachments, createCniDnsRegistry, type CniAttachmentRecord } from './cni-attachments.js';
import { openFsStore } from './fs.js';

const base = await mkdtemp(join(tmpdir(), 'tsnet-cni-dns-'));
t.teardown(() => rm(base, { recursive: true, force: true }));

const REC: CniAttachmentRecord = {
  networkId: 'cni-lab', network: 'lab', gateways: ['10.0.0.1' as IpAddr], subnets: ['10.0.0.0/24' as Prefix], containerId: 'c1', ifName: 'eth0', addresses: ['10.0.0.2' as IpAddr], names: ['web', 'c1'],
};

t.test('records in the fs store layout, lock-free; DEL and GC never create the state directory', async (t) => {
  const stateDir = join(base, 'state');
  const calls: string[] = [];
  const reg = createCniDnsRegistry({ stateDir, socket: join(base, 'run', 'daemon.sock'), notify: async (s, op) => (calls.push(`${s} ${op}`), false) });
  t.equal(await reg.remove('cni-x-y'), false, 'remove: nothing there');
  t.same(await reg.ids('cni-'), [], 'ids: none');
  t.equal(await stat(stateDir).then(() => true, () => false), false, 'the state directory was not created');
  await reg.put('cni-a-1', REC);
  await reg.put('cni-a-2', { ...REC, containerId: 'c2' });
  await reg.put('cni-b-1', { ...REC, network: 'other', networkId: 'cni-other' });
  t.same(await readdir(join(stateDir, 'records', 'cni-attachments')), ['cni-a-1.json', 'cni-a-2.json', 'cni-b-1.json'], 'one file per attachment');
  t.same(await reg.ids('cni-a-'), ['cni-a-1', 'cni-a-2'], 'ids by prefix');
  await writeFile(join(stateDir, 'records', 'cni-attachments', '.cni-a-3.json.tmp-1-ab'), 'half');
  t.same(await reg.ids('cni-a-'), ['cni-a-1', 'cni-a-2'], 'a write in progress (dot-file) is not a record');
  await t.rejects(reg.remove('../x'), /record id/, 'ids are validated before a path is built');
  t.equal(await reg.remove('cni-a-1'), true);
  t.equal(await reg.remove('cni-a-1'), false, 'idempotent');
  const { entries, errors } = await cniAttachments(await openFsStore({ dir: stateDir })).list();
  t.same(entries.map((e) => e.record.containerId), ['c2', 'c1'], 'the daemon reads them back');
  t.same(errors, []);
  await t.rejects(reg.put('cni-bad', { ...REC, addresses: ['nope' as IpAddr] }), /addresses/, 'a malformed record is refused on write');
  t.equal(await reg.notify(100), false, 'notify: no daemon');
  t.same(calls, [`${join(base, 'run', 'daemon.sock')} reload`]);
});

t.test('notify: the daemon gets the request; no daemon, stale socket', async (t) => {
  const dir = join(base, 'sock');
  await mkdir(dir, { recursive: true });
  const socket = join(dir, 'daemon.sock');
  const got: string[] = [];
  let seen: () => void = () => undefined;
  const server = net.createServer((c) => {
    c.setEncoding('utf8');
    c.on('error', () => undefined);
    c.on('data', (d: string) => {
      got.push(d);
      seen();
      c.end('{"ok":true,"pid":1}\n'); // as the daemon does, to a client that is gone
    });
  });
  await new Promise<void>((r) => server.listen(socket, r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const reg = createCniDnsRegistry({ stateDir: join(base, 's2'), socket, notify: daemonNotify });
  const arrived = new Promise<void>((r) => (seen = r));
  t.equal(await reg.notify(2000), true, 'a daemon listens');
  await arrived;
  t.same(got, ['{"op":"reload"}\n'], 'it received the reload request');
  t.equal(await daemonNotify(join(dir, 'none.sock'), 'reload', 100), false, 'no socket: no daemon');
  const stale = join(dir, 'stale.sock');
  await writeFile(stale, '');
  t.equal(await daemonNotify(stale, 'reload', 100), false, 'a socket file nobody listens on: no daemon');
  t.equal(await daemonCall(stale, 'reload', 100), undefined, 'the same for a call that waits for the reply');
});
