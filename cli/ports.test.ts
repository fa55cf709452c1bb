import t from 'tap';
import { parsePublish } from './ports.js';

t.test('Docker -p forms', async (t) => {
  t.same(parsePublish('8080:80'), { proto: 'tcp', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } });
  t.same(parsePublish('127.0.0.1:8080:80/udp'), { proto: 'udp', hostIp: '127.0.0.1', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } });
  t.same(parsePublish('[::1]:8080:80'), { proto: 'tcp', hostIp: '::1', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } });
  t.same(parsePublish('8000-8100:8000-8100/sctp'), { proto: 'sctp', hostPort: { start: 8000, end: 8100 }, containerPort: { start: 8000, end: 8100 } });
  t.same(parsePublish('8000-8100:80'), { proto: 'tcp', hostPort: { start: 8000, end: 8100 }, containerPort: { start: 80, end: 80 } });
  t.same(parsePublish('0.0.0.0:9000-9001:7000-7001'), { proto: 'tcp', hostIp: '0.0.0.0', hostPort: { start: 9000, end: 9001 }, containerPort: { start: 7000, end: 7001 } });
});

t.test('bad -p values: one clear error each', async (t) => {
  const cases: [string, RegExp][] = [
    ['0:80', /outside 1-65535/],
    ['65536:80', /outside 1-65535/],
    ['8100-8000:80', /reversed/],
    ['8000-8010:80-81', /must be equal/],
    ['8080:80/icmp', /unknown protocol/],
    ['300.1.1.1:8080:80', /not an IP address/],
    ['80', /ephemeral/],
    ['127.0.0.1::80', /ephemeral/],
    ['a:b', /not a port/],
    ['1:2:3:4', /expected/],
    ['[::1:8080:80', /IPv6/],
  ];
  for (const [raw, re] of cases) t.throws(() => parsePublish(raw), { code: 'INVALID_CONFIG', message: re }, raw);
});
