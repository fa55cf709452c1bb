import t from 'tap';
import { keyValues, parseArgs, table, type FlagSpec } from './args.js';

const specs: FlagSpec[] = [
  { name: 'detach', short: 'd', type: 'boolean', help: '' },
  { name: 'interactive', short: 'i', type: 'boolean', help: '' },
  { name: 'name', type: 'string', help: '' },
  { name: 'publish', short: 'p', type: 'string', multiple: true, help: '' },
  { name: 'opt', short: 'o', type: 'string', multiple: true, help: '' },
];

t.test('long, short, combined, repeatable, = forms', async (t) => {
  const p = parseArgs(['-di', '--name=web', '-p', '80:80', '-p8080:80', '--publish', '1:1', 'node', '-e', 'x'], specs, { stopAtPositional: true });
  t.same(p.flags, { detach: true, interactive: true, name: 'web', publish: ['80:80', '8080:80', '1:1'] });
  t.same(p.positionals, ['node', '-e', 'x'], 'options stop at the first positional');
  const q = parseArgs(['--name', 'x', '--', '-d'], specs);
  t.same(q.positionals, ['-d']);
  const r = parseArgs(['a', '--name', 'x', 'b'], specs);
  t.same(r.positionals, ['a', 'b']);
  t.equal(r.flags['name'], 'x');
});

t.test('errors name the flag', async (t) => {
  t.throws(() => parseArgs(['--nope'], specs), { code: 'INVALID_CONFIG', message: /--nope: unknown flag/ });
  t.throws(() => parseArgs(['-z'], specs), { message: /-z: unknown flag/ });
  t.throws(() => parseArgs(['--name'], specs), { message: /--name: needs a value/ });
  t.throws(() => parseArgs(['-p'], specs), { message: /-p: needs a value/ });
  t.throws(() => parseArgs(['--detach=maybe'], specs), { message: /--detach: expected true or false/ });
  t.same(keyValues(['a=b', 'c=d=e'], '-o'), { a: 'b', c: 'd=e' });
  t.throws(() => keyValues(['novalue'], '--opt'), { message: /--opt: expected KEY=VALUE/ });
});

t.test('table', async (t) => {
  t.equal(table(['A', 'LONGER'], [['xx', 'y'], ['x', 'zz']]), 'A    LONGER\nxx   y\nx    zz\n');
});
