import t from 'tap';
import { systemdUnit, UNIT_NAME } from './systemd-unit.js';

t.test('the unit of tsnet daemon: restarts it, keeps containers across restarts, quotes what needs it', async (t) => {
  const text = systemdUnit({ node: '/usr/bin/node', entry: '/opt/tsnet/dist/tsnet.js', stateDir: '/var/lib/tsnet', runDir: '/run/tsnet', firewall: 'nftables' });
  t.equal(UNIT_NAME, 'tsnet.service');
  const exec = text.split('\n').find((l) => l.startsWith('ExecStart='));
  t.equal(exec, 'ExecStart=/usr/bin/node /opt/tsnet/dist/tsnet.js --state-dir /var/lib/tsnet --run-dir /run/tsnet --firewall nftables --log-level info daemon', 'the daemon\'s command line');
  for (const line of ['Restart=always', 'RestartSec=1', 'KillMode=process', 'Type=simple', 'WantedBy=multi-user.target']) t.ok(text.split('\n').includes(line), line);
  t.match(text, /^\[Unit\]\n/, 'starts with [Unit]');
  t.match(text, /\n\[Service\]\n[\s\S]*\n\[Install\]\n/, 'then [Service] and [Install]');
  const odd = systemdUnit({ node: '/usr/bin/node', entry: '/srv/my tsnet/dist/tsnet.js', stateDir: '/var/lib/ts%net', runDir: '/run/$x', firewall: 'iptables', upstream: '10.0.0.53' });
  const oddExec = odd.split('\n').find((l) => l.startsWith('ExecStart=')) ?? '';
  t.match(oddExec, /"\/srv\/my tsnet\/dist\/tsnet\.js"/, 'a path with a space is quoted');
  t.match(oddExec, /"\/var\/lib\/ts%%net"/, '% is doubled (systemd specifiers)');
  t.match(oddExec, /"\/run\/\$\$x"/, '$ is doubled (systemd variables)');
  t.match(oddExec, / daemon --upstream 10\.0\.0\.53$/, 'the upstream after the command');
});
