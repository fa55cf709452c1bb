import t from 'tap';
import { parseIpAddr } from '../core/net.js';
import { hostsFile } from './hosts-file.js';
import { containerResolvConf, parseResolvConf, upstreamServers } from './resolv-conf.js';

t.test('parseResolvConf', async (t) => {
  const c = parseResolvConf('# comment\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\ndomain a.example\nsearch b.example c.example ; trailing\noptions ndots:2 edns0\n');
  t.same(c.nameservers, ['10.0.0.53', 'fe80::1']);
  t.same(c.search, ['b.example', 'c.example'], 'the last search/domain line wins');
  t.same(c.options, ['ndots:2', 'edns0']);
});

t.test('upstreams: loopback resolvers are never copied; systemd-resolved upstreams are used', async (t) => {
  const stub = parseResolvConf('nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n');
  const resolved = parseResolvConf('nameserver 192.0.2.1\nnameserver 2001:db8::1\nnameserver 127.0.0.1\n');
  t.same(upstreamServers(stub, resolved), ['192.0.2.1', '2001:db8::1']);
  t.same(upstreamServers(stub, undefined), [], 'nothing usable');
  const mixed = parseResolvConf('nameserver 127.0.0.1\nnameserver 192.0.2.9\n');
  t.same(upstreamServers(mixed, resolved), ['192.0.2.9'], 'direct non-loopback servers win');
});

t.test('containerResolvConf', async (t) => {
  const host = parseResolvConf('nameserver 127.0.0.53\nsearch corp.example\noptions edns0\n');
  const resolved = parseResolvConf('nameserver 192.0.2.1\n');
  const plain = containerResolvConf(host, resolved);
  t.match(plain, /^nameserver 192\.0\.2\.1$/m);
  t.notMatch(plain, /127\.0\.0\.53/);
  t.match(plain, /^search corp\.example$/m);
  t.match(plain, /^options edns0$/m);
  const custom = containerResolvConf(host, resolved, { dns: [parseIpAddr('198.51.100.7')], dnsSearch: ['x.example'], dnsOptions: ['timeout:1'] });
  t.match(custom, /^nameserver 198\.51\.100\.7$/m);
  t.notMatch(custom, /192\.0\.2\.1/);
  t.match(custom, /^search x\.example$/m);
  t.match(custom, /^options timeout:1$/m);
  const embedded = containerResolvConf(host, resolved, { embedded: parseIpAddr('10.89.0.1') });
  t.match(embedded, /^nameserver 10\.89\.0\.1$/m);
  t.equal((embedded.match(/^nameserver/gm) ?? []).length, 1, 'only the embedded resolver');
  t.match(embedded, /^options edns0 ndots:0$/m);
  t.match(embedded, /Upstream servers used by the embedded resolver: \[192\.0\.2\.1\]/);
  const none = containerResolvConf(parseResolvConf('nameserver 127.0.0.1\n'), undefined);
  t.match(none, /No usable nameserver/);
  t.notMatch(none, /^nameserver/m);
});

t.test('hostsFile: Docker layout, self last', async (t) => {
  const text = hostsFile({
    extra: [{ ip: parseIpAddr('192.0.2.10'), names: ['db.example'] }],
    self: [{ ip: parseIpAddr('10.89.0.2'), names: ['web', 'web'] }],
  });
  const lines = text.trim().split('\n');
  t.equal(lines[0], '127.0.0.1\tlocalhost');
  t.equal(lines[1], '::1\tlocalhost ip6-localhost ip6-loopback');
  t.equal(lines.at(-2), '192.0.2.10\tdb.example');
  t.equal(lines.at(-1), '10.89.0.2\tweb', 'own address with hostname, deduplicated');
  t.notMatch(hostsFile({ self: [], ipv6: false }), /::1/);
});
