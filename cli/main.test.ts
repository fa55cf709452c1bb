import t from 'tap';
import { servable } from './main.js';

const mine = { stateDir: '/var/lib/tsnet', runDir: '/run/tsnet', firewall: 'nftables' as const };
const env = {};

t.test('the daemon serves commands that need only arguments, environment and working directory', async (t) => {
  for (const argv of [
    ['run', '-d', '--name', 'web', '--', 'sleep', '1'], ['run', '--rm', '--', 'true'], ['exec', 'web', 'true'], ['exec', '-d', 'web', 'sleep', '9'],
    ['ps', '-a'], ['rm', '-f', 'web'], ['inspect', 'web'], ['logs', '-f', 'web'], ['stop', 'web'], ['network', 'ls'], ['network', 'inspect', 'lab'],
    ['version'], [], ['--state-dir', '/var/lib/tsnet/', 'ps'],
  ]) t.ok(servable(argv, env, mine), argv.join(' ') || '(no command)');
});

t.test('the client runs the others itself', async (t) => {
  for (const argv of [
    ['run', '-it', '--', 'sh'], ['run', '-i', '--', 'cat'], ['run', '-dt', '--', 'sh'], ['run', '--tty', '--', 'sh'], ['exec', '-it', 'web', 'sh'], ['exec', '-i', 'web', 'cat'],
    ['daemon', '--status'], ['events'], ['doctor'], ['firewall', 'reload'], ['docker-plugin'], ['cni', 'install'],
    ['--state-dir', '/tmp/other', 'ps'], ['--run-dir', '/run/other', 'ps'], ['--firewall', 'iptables', 'ps'],
  ]) t.notOk(servable(argv, env, mine), argv.join(' '));
  t.notOk(servable(['ps'], { TSNET_STATE_DIR: '/srv/state' }, mine), 'another state directory by the environment');
  t.ok(servable(['run', '--', 'sh', '-it'], env, mine), 'flags after the command belong to it');
});
