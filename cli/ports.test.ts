import t from 'tap';
import { parseExpose, parsePublish, portBindings, portLines } from './ports.js';

t.test('Docker -p forms', async (t) => {
  t.same(parsePublish('8080:80'), { proto: 'tcp', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } });
  t.same(parsePublish('127.0.0.1:8080:80/udp'), { proto: 'udp', hostIp: '127.0.0.1', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } });
  t.same(parsePublish('[::1]:8080:80'), { proto: 'tcp', hostIp: '::1', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } });
  t.same(parsePublish('8000-8100:8000-8100/sctp'), { proto: 'sctp', hostPort: { start: 8000, end: 8100 }, containerPort: { start: 8000, end: 8100 } });
  t.same(parsePublish('8000-8100:80'), { proto: 'tcp', within: { start: 8000, end: 8100 }, containerPort: { start: 80, end: 80 } }, 'one free port of the host range');
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
    ['', /not a port/],
    ['127.0.0.1::', /not a port/],
    ['80-79', /reversed/],
    ['a:b', /not a port/],
    ['1:2:3:4', /expected/],
    ['[::1:8080:80', /IPv6/],
  ];
  for (const [raw, re] of cases) t.throws(() => parsePublish(raw), { code: 'INVALID_CONFIG', message: re }, raw);
});

t.test('ephemeral host ports: CPORT, :CPORT, IP::CPORT, a container range', async (t) => {
  t.same(parsePublish('80'), { proto: 'tcp', containerPort: { start: 80, end: 80 } });
  t.same(parsePublish(':53/udp'), { proto: 'udp', containerPort: { start: 53, end: 53 } });
  t.same(parsePublish('127.0.0.1::80'), { proto: 'tcp', hostIp: '127.0.0.1', containerPort: { start: 80, end: 80 } });
  t.same(parsePublish('[fd00::1]::80/sctp'), { proto: 'sctp', hostIp: 'fd00::1', containerPort: { start: 80, end: 80 } });
  t.same(parsePublish('7000-7009'), { proto: 'tcp', containerPort: { start: 7000, end: 7009 } });
});

t.test('--expose', async (t) => {
  t.same(parseExpose('80'), { proto: 'tcp', containerPort: { start: 80, end: 80 } });
  t.same(parseExpose('5000-5002/udp'), { proto: 'udp', containerPort: { start: 5000, end: 5002 } });
  t.throws(() => parseExpose('80/icmp'), { code: 'INVALID_CONFIG', message: /^expose: .*unknown protocol/ });
  t.throws(() => parseExpose('0'), { code: 'INVALID_CONFIG', message: /^expose: .*outside 1-65535/ });
  t.throws(() => parseExpose('x'), { code: 'INVALID_CONFIG', message: /^expose: / });
});

t.test("Docker's views: NetworkSettings.Ports and `port` lines", async (t) => {
  const b = portBindings([
    { proto: 'tcp', containerIp: '10.0.0.2', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } },
    { proto: 'tcp', containerIp: 'fd00::2', hostPort: { start: 8080, end: 8080 }, containerPort: { start: 80, end: 80 } },
    { proto: 'udp', hostIp: '127.0.0.1', containerIp: '10.0.0.2', hostPort: { start: 9000, end: 9001 }, containerPort: { start: 7000, end: 7001 } },
    { proto: 'tcp', containerIp: '10.0.0.2', hostPort: { start: 8000, end: 8100 }, containerPort: { start: 81, end: 81 } },
  ]);
  t.same(b, {
    '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '8080' }, { HostIp: '::', HostPort: '8080' }],
    '7000/udp': [{ HostIp: '127.0.0.1', HostPort: '9000' }],
    '7001/udp': [{ HostIp: '127.0.0.1', HostPort: '9001' }],
    '81/tcp': [{ HostIp: '0.0.0.0', HostPort: '8000-8100' }],
  });
  t.same(portLines(b), ['80/tcp -> 0.0.0.0:8080', '80/tcp -> [::]:8080', '81/tcp -> 0.0.0.0:8000-8100', '7000/udp -> 127.0.0.1:9000', '7001/udp -> 127.0.0.1:9001']);
  t.same(portLines(b, '80'), ['0.0.0.0:8080', '[::]:8080']);
  t.same(portLines(b, '7001/udp'), ['127.0.0.1:9001']);
  t.same(portLines(b, '7001'), [], 'the protocol defaults to tcp');
});
