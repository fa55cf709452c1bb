import t from 'tap';
import net from 'node:net';
import { mkdtemp, readdir, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IpAddr, Prefix } from '../../core/net.js';
import { daemonCall } from '../daemon-client.js';
import { CNI_ATTACHMENTS_SPEC, createCniAttachmentReader } from './cni-attachments-reader.js';
import { createCniDnsRegistry, type CniAttachmentRecord } from './cni-attachments.js';
import { openFsStore } from './fs.js';

const base = await mkdtemp(join(tmpdir(), 'tsnet-cni-dns-'));
t.teardown(() => rm(base, { recursive: true, force: true }));

const REC: CniAttachmentRecord = {
  networkId: 'cni-lab', network: 'lab', gateways: ['10.0.0.1' as IpAddr], subnets: ['10.0.0.0/24' as Prefix], containerId: 'c1', ifName: 'eth0', addresses: ['10.0.0.2' as IpAddr], names: ['web', 'c1'],
};

t.test('records in the store layout, lock-free; DEL and GC never create the state directory; the daemon reads changes only', async (t) => {
  const stateDir = join(base, 'state');
  const calls: string[] = [];
  const reg = createCniDnsRegistry({ stateDir, socket: join(base, 'run', 'daemon.sock'), call: async (s, op) => (calls.push(`${s} ${op}`), undefined) });
  t.equal(await reg.remove('cni-x-y'), false, 'remove: nothing there');
  t.same(await reg.ids('cni-'), [], 'ids: none');
  t.equal(await stat(stateDir).then(() => true, () => false), false, 'the state directory was not created');
  const read = createCniAttachmentReader(stateDir);
  t.same(await read(), { records: [], errors: [] }, 'reader: nothing yet');
  await reg.put('cni-a-1', REC);
  await reg.put('cni-a-2', { ...REC, containerId: 'c2' });
  await reg.put('cni-b-1', { ...REC, network: 'other', networkId: 'cni-other' });
  const dir = join(stateDir, 'records', 'cni-attachments');
  t.same(await readdir(dir), ['cni-a-1.json', 'cni-a-2.json', 'cni-b-1.json'], 'one file per attachment');
  t.same(await reg.ids('cni-a-'), ['cni-a-1', 'cni-a-2'], 'ids by prefix');
  await writeFile(join(dir, '.cni-a-3.json.tmp-1-ab'), 'half');
  t.same(await reg.ids('cni-a-'), ['cni-a-1', 'cni-a-2'], 'a write in progress (dot-file) is not a record');
  await t.rejects(reg.remove('../x'), /record id/, 'ids are validated before a path is built');
  t.same((await read()).records.map((r) => r.containerId), ['c1', 'c2', 'c1'], 'the daemon reads them');
  t.equal(await reg.remove('cni-a-1'), true);
  t.equal(await reg.remove('cni-a-1'), false, 'idempotent');
  await reg.put('cni-b-1', { ...REC, network: 'other', networkId: 'cni-other', names: ['renamed'] });
  await writeFile(join(dir, 'cni-z-9.json'), '{"schemaVersion":1,"id":"cni-z-9","record":{}}');
  const again = await read();
  t.same(again.records.map((r) => r.names[0]), ['web', 'renamed'], 'removed and rewritten records are seen at the next read');
  t.equal(again.errors.length, 1, 'a bad file is reported');
  t.match(again.errors[0], /cni-z-9\.json/, 'naming it');
  const { entries, errors } = await (await openFsStore({ dir: stateDir })).collection(CNI_ATTACHMENTS_SPEC).list();
  t.same(entries.map((e) => e.id), ['cni-a-2', 'cni-b-1'], "the fs store reads the same files (its layout and format)");
  t.equal(errors.length, 1);
  await reg.put('cni-bad', { ...REC, addresses: ['nope' as IpAddr] });
  t.match((await read()).errors.join('\n'), /cni-bad\.json.*addresses|addresses.*cni-bad/s, 'a malformed record (the writer does not validate: no zod in the plugin) is refused by the reader, naming the file');
  t.equal(await reg.reload(100), false, 'reload: no daemon');
  t.same(calls, [`${join(base, 'run', 'daemon.sock')} reload`]);
});

t.test('reload: ack, failure, no answer, no daemon, stale socket', async (t) => {
  const dir = join(base, 'sock');
  await mkdir(dir, { recursive: true });
  const socket = join(dir, 'daemon.sock');
  let reply: string | undefined = '{"ok":true,"pid":1}\n';
  const got: string[] = [];
  const server = net.createServer((c) => {
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      got.push(d);
      if (reply !== undefined) c.end(reply);
    });
  });
  await new Promise<void>((r) => server.listen(socket, r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const reg = createCniDnsRegistry({ stateDir: join(base, 's2'), socket, call: daemonCall });
  t.equal(await reg.reload(2000), true, 'acked');
  t.same(got, ['{"op":"reload"}\n'], 'the daemon got a reload request');
  reply = '{"ok":false,"pid":1,"error":"boom"}\n';
  await t.rejects(reg.reload(2000), /daemon reload failed: .*boom/, 'a failed reload is an error (the plugin logs it)');
  reply = undefined;
  await t.rejects(reg.reload(100), /no answer to reload within 100 ms/, 'bounded wait');
  t.equal(await daemonCall(join(dir, 'none.sock'), 'reload', 100), undefined, 'no socket: no daemon');
  const stale = join(dir, 'stale.sock');
  await writeFile(stale, '');
  t.equal(await daemonCall(stale, 'reload', 100), undefined, 'a socket file nobody listens on: no daemon');
});
