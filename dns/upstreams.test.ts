import t from 'tap';
import { parseResolvConf } from './resolv-conf.js';
import { hostUpstreams, parseUpstreams } from './upstreams.js';

t.test('parseUpstreams', async (t) => {
  t.same(parseUpstreams('10.0.0.1, 10.0.0.2:5353,[fd00::1]:54,fd00::2'), [
    { host: '10.0.0.1', port: 53 }, { host: '10.0.0.2', port: 5353 }, { host: 'fd00::1', port: 54 }, { host: 'fd00::2', port: 53 },
  ]);
  t.same(parseUpstreams(''), []);
  t.throws(() => parseUpstreams('10.0.0.1:0'), { code: 'INVALID_CONFIG', message: /upstream: "10\.0\.0\.1:0": port/ });
  t.throws(() => parseUpstreams('dns.example'), { code: 'INVALID_CONFIG', message: /expected IP/ });
  t.throws(() => parseUpstreams('10.0.0.1:99999', 'dns-upstream'), { message: /^dns-upstream:/ });
});

t.test('hostUpstreams follows systemd-resolved past 127.0.0.53', async (t) => {
  const stub = parseResolvConf('nameserver 127.0.0.53\n');
  t.same(hostUpstreams(stub, parseResolvConf('nameserver 192.0.2.1\n')), [{ host: '192.0.2.1', port: 53 }]);
  t.same(hostUpstreams(stub, undefined), []);
  t.same(hostUpstreams(parseResolvConf('nameserver 198.51.100.1\n'), undefined), [{ host: '198.51.100.1', port: 53 }]);
});
