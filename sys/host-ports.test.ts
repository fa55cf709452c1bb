import t from 'tap';
import { parsePortRange, parseSsListeners } from './host-ports.js';

t.test('ss -Hln -t -u -S output', async (t) => {
  const out = [
    'tcp   LISTEN 0      511          0.0.0.0:8080       0.0.0.0:*',
    'tcp   LISTEN 0      4096    127.0.0.53%lo:53         0.0.0.0:*',
    'tcp   LISTEN 0      4096            [::]:22            [::]:*',
    'udp   UNCONN 0      0      [fe80::1]%eth0:546         [::]:*',
    'udp   UNCONN 0      0   [::ffff:127.0.0.1]:5353         *:*',
    'sctp  LISTEN 0      5                  *:9999             *:*',
    'garbage',
    'tcp   LISTEN 0 5 nocolon x',
    '',
  ].join('\n');
  t.same(parseSsListeners(out), [
    { proto: 'tcp', ip: '0.0.0.0', port: 8080 },
    { proto: 'tcp', ip: '127.0.0.53', port: 53 },
    { proto: 'tcp', ip: '::', port: 22 },
    { proto: 'udp', ip: 'fe80::1', port: 546 },
    { proto: 'udp', ip: '127.0.0.1', port: 5353 },
    { proto: 'sctp', ip: '*', port: 9999 },
  ]);
});

t.test('ip_local_port_range', async (t) => {
  t.same(parsePortRange('32768\t60999\n'), { start: 32768, end: 60999 });
  for (const bad of ['', '1', '60999 32768', '0 10', 'a b']) t.throws(() => parsePortRange(bad), /unexpected ip_local_port_range/, JSON.stringify(bad));
});
