import t from 'tap';
import { parseCliRequest } from './cli-service.js';

const req = (parts: readonly string[]): Buffer => Buffer.from(`${parts.join('\0')}\0`);
const HEAD = ['tsnet-cli 1', 'pid', '42', 'pidns', 'pid:[1]', 'netns', 'net:[2]', 'mntns', 'mnt:[3]', 'cwd', '/srv/app'];

t.test('a request as the front end sends it', async (t) => {
  const r = parseCliRequest(req([...HEAD, 'env', 'PATH=/bin', 'env', 'A=x=y', 'env', 'EMPTY=', 'argv', 'run', '-d', '--', 'sh', '-c', 'echo "a b"', '']));
  t.same(r, {
    pid: 42, namespaces: { pid: 'pid:[1]', net: 'net:[2]', mnt: 'mnt:[3]' }, cwd: '/srv/app',
    env: { PATH: '/bin', A: 'x=y', EMPTY: '' }, argv: ['run', '-d', '--', 'sh', '-c', 'echo "a b"', ''],
  }, 'values with = and empty arguments kept');
  t.same(parseCliRequest(req([...HEAD, 'argv']))?.argv, [], 'no arguments');
});

t.test('anything else is not a request (the front end then runs the command itself)', async (t) => {
  t.equal(parseCliRequest(Buffer.from('tsnet-cli 1\0pid\0' + '1')), undefined, 'not NUL-ended');
  t.equal(parseCliRequest(req(['tsnet-cli 2', ...HEAD.slice(1), 'argv'])), undefined, 'another version');
  t.equal(parseCliRequest(req(HEAD)), undefined, 'no argv marker');
  t.equal(parseCliRequest(req([...HEAD.slice(0, 9), 'argv'])), undefined, 'no cwd');
  t.equal(parseCliRequest(req([...HEAD.map((x) => (x === '/srv/app' ? 'srv' : x)), 'argv'])), undefined, 'relative cwd');
  t.equal(parseCliRequest(req([...HEAD.map((x) => (x === '42' ? '-1' : x)), 'argv'])), undefined, 'bad pid');
  t.equal(parseCliRequest(req([...HEAD, 'env', 'argv'])), undefined, 'a key without its value');
});
