import t from 'tap';
import { TsnetError } from '../../core/errors.js';
import { nullLogger } from '../../core/log.js';
import type { IpAddr, Prefix } from '../../core/net.js';
import { UndoStack } from '../../core/undo.js';
import type { CniAttachmentRecord, CniDnsRegistry } from '../../sys/store/api.js';
import { attachmentNames, dnsAdd, dnsCheck, dnsDel, dnsGc, isDnsName, parseAliases, parseDnsConf, resolverOf, withResolver } from './dns.js';
import { cniEndpointId } from './names.js';
import type { Request } from './skel.js';

t.test('DNS names', async (t) => {
  for (const ok of ['web', 'Web_1', 'a.b-c.d', 'x', `${'a'.repeat(63)}.b`, '0abc']) t.ok(isDnsName(ok), ok);
  for (const bad of ['', 'a b', '-web', 'web-', 'a..b', '.a', 'a.', `${'a'.repeat(64)}`, `${'a.'.repeat(127)}ab`, 'ü', 'a/b']) t.notOk(isDnsName(bad), JSON.stringify(bad));
});

t.test('runtimeConfig.aliases: both shapes, this network only, fields named', async (t) => {
  const rc = (aliases: unknown): Record<string, unknown> => ({ runtimeConfig: { aliases } });
  t.equal(parseAliases({}, 'lab'), undefined, 'absent');
  t.same(parseAliases(rc({ lab: ['web', 'www'], other: ['x'] }), 'lab'), ['web', 'www'], "Podman's map: this network's entry");
  t.same(parseAliases(rc({ other: ['x'] }), 'lab'), [], 'no entry for this network: none');
  t.same(parseAliases(rc(['web']), 'lab'), ['web'], 'a plain list');
  t.same(parseAliases(rc({ lab: ['web'], other: ['not a name but not ours'] }), 'lab'), ['web'], "another network's names are not judged");
  t.throws(() => parseAliases(rc({ lab: ['ok', 'bad name'] }), 'lab'), /runtimeConfig\.aliases\.lab\[1\]: "bad name" is not a DNS name/);
  t.throws(() => parseAliases(rc({ lab: 'web' }), 'lab'), /runtimeConfig\.aliases\.lab: must be a list/);
  t.throws(() => parseAliases(rc({ other: 'x' }), 'lab'), /runtimeConfig\.aliases\.other: must be a list/, "another network's entry must still be a list");
  t.throws(() => parseAliases(rc(5), 'lab'), /runtimeConfig\.aliases: must be an object/);
  t.throws(() => parseAliases(rc([1]), 'lab'), /runtimeConfig\.aliases\[0\]: must be a string/);
  t.throws(() => parseAliases(rc(Array.from({ length: 65 }, (_, i) => `n${i}`)), 'lab'), /at most 64/);
  try {
    parseAliases(rc({ lab: ['-x'] }), 'lab');
    t.fail('should throw');
  } catch (err) {
    t.ok(err instanceof TsnetError && err.code === 'INVALID_CONFIG', 'INVALID_CONFIG (CNI code 7)');
    t.same((err as TsnetError).details, { field: 'runtimeConfig.aliases.lab[0]' });
  }
});

t.test('when DNS is on', async (t) => {
  t.equal(parseDnsConf({}, 'lab', true).enabled, false, 'off by default');
  t.equal(parseDnsConf({ capabilities: { aliases: true } }, 'lab', true).enabled, true, 'on when the aliases capability is declared');
  t.equal(parseDnsConf({ capabilities: { aliases: false } }, 'lab', true).enabled, false);
  t.equal(parseDnsConf({ runtimeConfig: { aliases: { lab: [] } } }, 'lab', true).enabled, true, 'on when the runtime passes aliases');
  t.equal(parseDnsConf({ tsnetDns: true }, 'lab', true).enabled, true, 'tsnetDns: true');
  t.equal(parseDnsConf({ tsnetDns: false, capabilities: { aliases: true }, runtimeConfig: { aliases: ['a'] } }, 'lab', false).enabled, false, 'tsnetDns: false wins (and needs no gateway)');
  t.throws(() => parseDnsConf({ tsnetDns: 1 }, 'lab', true), /tsnetDns: must be true or false/);
  t.throws(() => parseDnsConf({ tsnetDns: true }, 'lab', false), /tsnetDns: .*isGateway/);
  t.throws(() => parseDnsConf({ runtimeConfig: { aliases: ['a'] } }, 'lab', false), /runtimeConfig\.aliases: .*isGateway/);
  t.throws(() => parseDnsConf({ tsnetRunDir: 'run' }, 'lab', true), /tsnetRunDir: must be an absolute path/);
  t.same(parseDnsConf({ tsnetStateDir: '/s', tsnetRunDir: '/r', tsnetDns: true, runtimeConfig: { aliases: { lab: ['w'] } } }, 'lab', true), { stateDir: '/s', runDir: '/r', enabled: true, aliases: ['w'] });
});

t.test('names of an attachment, resolver address', async (t) => {
  const req = (pod?: string): Pick<Request, 'args' | 'containerId'> => ({ containerId: '0123456789abcdef0123', args: new Map(pod !== undefined ? [['K8S_POD_NAME', pod]] : []) });
  t.same(attachmentNames(req('webctr'), ['web', 'WEBCTR', 'www']), ['webctr', 'web', 'www', '0123456789ab'], 'container name first, duplicates (any case) dropped, short id last');
  t.same(attachmentNames(req('not a name'), ['web']), ['web', '0123456789ab'], 'a container name that is no DNS name is skipped');
  t.same(attachmentNames(req(), []), ['0123456789ab'], 'at least the short id');
  t.equal(resolverOf(['fd00::1', '10.0.0.1'] as IpAddr[]), '10.0.0.1', 'IPv4 gateway first');
  t.equal(resolverOf(['fd00::1'] as IpAddr[]), 'fd00::1');
  t.same(withResolver({ nameservers: ['1.1.1.1', '10.0.0.1'], search: ['x'] }, '10.0.0.1' as IpAddr), { nameservers: ['10.0.0.1', '1.1.1.1'], search: ['x'] }, 'resolver first, kept once');
  t.same(withResolver(undefined, '10.0.0.1' as IpAddr), { nameservers: ['10.0.0.1'] });
  t.equal(withResolver(undefined, undefined), undefined);
});

/** An in-memory registry; `daemon` says whether a daemon answers (or, 'slow', times out). */
function fakeRegistry(daemon: boolean | 'slow'): CniDnsRegistry & { records: Map<string, CniAttachmentRecord>; reloads: number; dirs: unknown[] } {
  const records = new Map<string, CniAttachmentRecord>();
  const self = {
    records,
    reloads: 0,
    dirs: [] as unknown[],
    async put(id: string, rec: CniAttachmentRecord) {
      records.set(id, rec);
    },
    async remove(id: string) {
      return records.delete(id);
    },
    async ids(prefix: string) {
      return [...records.keys()].filter((k) => k.startsWith(prefix));
    },
    removeStaleTemps: async () => [],
    async reload() {
      self.reloads++;
      if (daemon === 'slow') throw new TsnetError('UNAVAILABLE', 'no answer');
      return daemon;
    },
  };
  return self;
}

const request = (containerId: string, config: Record<string, unknown> = {}): Request => ({
  verb: 'ADD', containerId, ifName: 'eth0', netns: '/x', args: new Map(), path: [], cniVersion: '1.1.0', name: 'lab', config, stdin: '', env: {},
});
const SUBNETS = [{ subnet: '10.0.0.0/24' as Prefix, gateway: '10.0.0.1' as IpAddr }];

t.test('ADD/DEL/GC over a registry', async (t) => {
  const reg = fakeRegistry(true);
  const deps = { log: nullLogger, dnsRegistry: (d: unknown) => (reg.dirs.push(d), reg) };
  const conf = parseDnsConf({ tsnetDns: true, tsnetStateDir: '/s', runtimeConfig: { aliases: { lab: ['web'] } } }, 'lab', true);
  const undo = new UndoStack();
  t.equal(await dnsAdd(deps, request('c1'), conf, { addresses: ['10.0.0.2' as IpAddr], subnets: SUBNETS, undo }), '10.0.0.1', 'the resolver, once a daemon acked');
  const id = cniEndpointId('lab', 'c1', 'eth0');
  t.same(reg.records.get(id), { networkId: 'cni-lab', network: 'lab', gateways: ['10.0.0.1'], subnets: ['10.0.0.0/24'], containerId: 'c1', ifName: 'eth0', addresses: ['10.0.0.2'], names: ['web', 'c1'] });
  t.same(reg.dirs[0], { stateDir: '/s', runDir: undefined, enabled: true, aliases: ['web'] }, 'the configured directories reach the registry');
  t.equal(reg.reloads, 1, 'one reload');
  await undo.unwind(nullLogger);
  t.equal(reg.records.size, 0, 'undone: the record is removed');
  t.equal(reg.reloads, 2, 'and the daemon reloaded');

  const off = parseDnsConf({}, 'lab', true);
  t.equal(await dnsAdd(deps, request('c0'), off, { addresses: ['10.0.0.9' as IpAddr], subnets: SUBNETS, undo: new UndoStack() }), undefined, 'DNS off: nothing');
  t.equal(reg.records.size, 0, 'DNS off: no record');

  for (const c of ['c1', 'c2', 'c3']) await dnsAdd(deps, request(c), conf, { addresses: ['10.0.0.2' as IpAddr], subnets: SUBNETS, undo: new UndoStack() });
  await dnsCheck(deps, request('c1'), conf);
  t.pass('CHECK: the record is there');
  const reloads = reg.reloads;
  await dnsDel(deps, request('c1'));
  await t.rejects(dnsCheck(deps, request('c1'), conf), /tsnet DNS record of c1\/eth0 is missing/, 'CHECK after the record went');
  await dnsCheck(deps, request('c1'), off);
  t.pass('CHECK with DNS off: nothing to check');
  t.equal(reg.records.size, 2, 'DEL removes the record');
  t.equal(reg.reloads, reloads + 1, 'and reloads');
  await dnsDel(deps, request('c1'));
  t.equal(reg.reloads, reloads + 1, 'a second DEL: nothing to remove, no reload');
  t.same(await dnsGc(deps, request(''), [{ containerId: 'c2', ifName: 'eth0' }]), [cniEndpointId('lab', 'c3', 'eth0')], 'GC removes what is not listed');
  t.same([...reg.records.keys()], [cniEndpointId('lab', 'c2', 'eth0')]);
  t.same(await dnsGc(deps, request(''), [{ containerId: 'c2', ifName: 'eth0' }]), [], 'GC again: nothing');
});

t.test('no daemon, slow daemon, no gateway', async (t) => {
  const conf = parseDnsConf({ tsnetDns: true }, 'lab', true);
  const none = fakeRegistry(false);
  t.equal(await dnsAdd({ log: nullLogger, dnsRegistry: () => none }, request('c1'), conf, { addresses: ['10.0.0.2' as IpAddr], subnets: SUBNETS, undo: new UndoStack() }), undefined, 'no daemon: no resolver named');
  t.equal(none.records.size, 1, 'but the record is written');
  const slow = fakeRegistry('slow');
  t.equal(await dnsAdd({ log: nullLogger, dnsRegistry: () => slow }, request('c1'), conf, { addresses: ['10.0.0.2' as IpAddr], subnets: SUBNETS, undo: new UndoStack() }), '10.0.0.1', 'a daemon that does not ack in time: ADD goes on, the resolver is named');
  await t.rejects(dnsAdd({ log: nullLogger, dnsRegistry: () => none }, request('c2'), conf, { addresses: ['10.0.0.3' as IpAddr], subnets: [], undo: new UndoStack() }), /ipam: .*gateway/);
});
