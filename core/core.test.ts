import t from 'tap';
import { CNI_CODE, ERROR_CODES, EXIT_CODE, TsnetError, isCode, wrap } from './errors.js';
import { KeyedMutex } from './keyed-mutex.js';
import { createJsonLogger, nullLogger, parseLogLevel } from './log.js';
import { teardownAll } from './teardown.js';
import { UndoStack } from './undo.js';

t.test('errors: wrap keeps code and details, adds context', async (t) => {
  const inner = new TsnetError('NOT_FOUND', 'Cannot find device "x"', { details: { field: 'bridge' } });
  const outer = wrap('join ep1', wrap('add veth', inner));
  t.equal(outer.code, 'NOT_FOUND');
  t.equal(outer.message, 'join ep1: add veth: Cannot find device "x"');
  t.same(outer.details, { field: 'bridge' });
  t.equal(outer.cause instanceof TsnetError, true);
  t.equal(wrap('x', new Error('boom')).code, 'INTERNAL');
  t.equal(wrap('x', 'str').message, 'x: str');
  t.ok(isCode(inner, 'NOT_FOUND'));
  t.notOk(isCode(new Error('x'), 'NOT_FOUND'));
  for (const c of ERROR_CODES) {
    t.type(EXIT_CODE[c], 'number', `exit code for ${c}`);
    t.type(CNI_CODE[c], 'number', `cni code for ${c}`);
  }
  t.equal(new Set(Object.values(EXIT_CODE)).size, ERROR_CODES.length, 'exit codes are distinct');
  t.equal(CNI_CODE.INVALID_CONFIG, 7);
  t.equal(CNI_CODE.EXHAUSTED, 11, 'try again later');
});

t.test('UndoStack unwinds in reverse, survives failing steps, commit forgets', async (t) => {
  const order: string[] = [];
  const warnings: string[] = [];
  const log = { ...nullLogger, warn: (m: string) => { warnings.push(m); } };
  const u = new UndoStack();
  u.push('a', async () => { order.push('a'); });
  u.push('b', async () => { throw new Error('b failed'); });
  u.push('c', async () => { order.push('c'); });
  await u.unwind(log);
  t.same(order, ['c', 'a']);
  t.same(warnings, ['undo step failed']);
  t.equal(u.size, 0);
  const v = new UndoStack();
  v.push('x', async () => { order.push('x'); });
  v.commit();
  await v.unwind(log);
  t.same(order, ['c', 'a'], 'committed steps do not run');
});

t.test('teardownAll runs every step; NOT_FOUND is done; others aggregate', async (t) => {
  const ran: string[] = [];
  await teardownAll([
    { label: 'a', run: async () => { ran.push('a'); throw new TsnetError('NOT_FOUND', 'gone'); } },
    { label: 'b', run: async () => { ran.push('b'); } },
  ]);
  t.same(ran, ['a', 'b']);
  ran.length = 0;
  await t.rejects(
    teardownAll([
      { label: 'a', run: async () => { ran.push('a'); throw new Error('busy'); } },
      { label: 'b', run: async () => { ran.push('b'); } },
      { label: 'c', run: async () => { ran.push('c'); throw new TsnetError('INTERNAL', 'kaput'); } },
    ]),
    { name: 'AggregateError', message: 'teardown: a: busy; c: kaput' },
  );
  t.same(ran, ['a', 'b', 'c'], 'steps after a failure still run');
});

t.test('KeyedMutex serializes per key, parallel across keys', async (t) => {
  const m = new KeyedMutex();
  const events: string[] = [];
  const task = (name: string, ms: number) => async () => {
    events.push(`start ${name}`);
    await new Promise((r) => setTimeout(r, ms));
    events.push(`end ${name}`);
    return name;
  };
  const results = await Promise.all([m.run('k', task('a', 20)), m.run('k', task('b', 1)), m.run('j', task('c', 1))]);
  t.same(results, ['a', 'b', 'c']);
  t.ok(events.indexOf('end a') < events.indexOf('start b'), 'same key: b waits for a');
  t.ok(events.indexOf('end c') < events.indexOf('end a'), 'other key runs alongside');
  await t.rejects(m.run('k', async () => { throw new Error('x'); }), { message: 'x' });
  t.equal(await m.run('k', async () => 'after failure'), 'after failure', 'a failed task releases the key');
  t.equal(m.activeKeys, 0);
});

t.test('JSON logger: levels, child fields, errors', async (t) => {
  const lines: string[] = [];
  const log = createJsonLogger({ write: (l) => lines.push(l), level: 'info', now: () => new Date(0), fields: { component: 'x' } });
  log.debug('hidden');
  log.child({ network: 'n1' }).info('created', { err: new Error('e') });
  t.equal(lines.length, 1);
  t.same(JSON.parse(lines[0] ?? ''), { time: '1970-01-01T00:00:00.000Z', level: 'info', msg: 'created', component: 'x', network: 'n1', err: { name: 'Error', message: 'e' } });
  t.equal(parseLogLevel('debug'), 'debug');
  t.equal(parseLogLevel('nonsense'), 'info');
  t.equal(parseLogLevel(undefined, 'warn'), 'warn');
});
