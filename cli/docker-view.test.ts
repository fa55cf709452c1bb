/** Docker's words for durations and states, and the shapes of ps/inspect/network ls. */
import t from 'tap';
import type { ContainerRecord } from '../runtime/spec.js';
import { goTime, humanDuration, psFields, statusText } from './docker-view.js';
import { parseFilters, labelsMatch, anyOf } from './filters.js';

const rec = (over: Partial<ContainerRecord>): ContainerRecord => ({
  schemaVersion: 1, id: 'a'.repeat(64), name: 'web', hostname: 'h', argv: ['sleep', '100'], env: {}, cwd: '/', rootfs: null,
  netns: { kind: 'host' }, files: {}, labels: { app: 'x' }, autoRemove: false, createdAt: '2024-01-01T00:00:00.000Z', status: 'running',
  pid: 5, pidStartTime: '1', bootId: 'b', startedAt: '2024-01-01T00:00:00.000Z', finishedAt: null, exitCode: null, error: null,
  tty: false, openStdin: false, init: false, config: {}, foreground: null, restartCount: 0, ...over,
});
const at = (s: number): Date => new Date(Date.parse('2024-01-01T00:00:00.000Z') + s * 1000);

t.test('go-units HumanDuration, as docker ps prints it', async (t) => {
  t.equal(humanDuration(500), 'Less than a second');
  t.equal(humanDuration(1000), '1 second');
  t.equal(humanDuration(5_000), '5 seconds');
  t.equal(humanDuration(60_000), 'About a minute');
  t.equal(humanDuration(120_000), '2 minutes');
  t.equal(humanDuration(3_600_000), 'About an hour');
  t.equal(humanDuration(3 * 3_600_000), '3 hours');
  t.equal(humanDuration(3 * 86_400_000), '3 days');
  t.equal(humanDuration(20 * 86_400_000), '2 weeks');
  t.equal(humanDuration(90 * 86_400_000), '3 months');
  t.equal(humanDuration(800 * 86_400_000), '2 years');
});

t.test('STATUS and State', async (t) => {
  t.equal(statusText(rec({}), at(5)), 'Up 5 seconds');
  t.equal(statusText(rec({ status: 'exited', exitCode: 1, finishedAt: '2024-01-01T00:00:00.000Z' }), at(120)), 'Exited (1) 2 minutes ago');
  t.equal(statusText(rec({ status: 'created', startedAt: null }), at(1)), 'Created');
  const f = psFields({ record: rec({}), sandbox: undefined, endpoints: [], networks: ['lab'] }, at(5), true);
  t.match(f, { ID: 'aaaaaaaaaaaa', Command: '"sleep 100"', State: 'running', Status: 'Up 5 seconds', Networks: 'lab', Labels: 'app=x', RunningFor: '5 seconds ago', CreatedAt: '2024-01-01 00:00:00 +0000 UTC' });
  t.equal((f['Label'] as (k: string) => string)('app'), 'x', '.Label "app"');
  t.equal(psFields({ record: rec({ argv: ['node', '-e', 'a very long script indeed'] }), sandbox: undefined, endpoints: [], networks: [] }, at(1), true)['Command'], '"node -e \\"a very lon…"', 'Command truncated to 20 with an ellipsis, quoted');
  t.equal(goTime('2024-03-05T07:08:09.123Z'), '2024-03-05 07:08:09 +0000 UTC');
});

t.test('filters combine as Docker combines them', async (t) => {
  const f = parseFilters(['name=a', 'name=b', 'label=x', 'label=y=1'], ['name', 'label']);
  t.ok(anyOf(f, 'name', (v) => v === 'b'), 'the same key: any value');
  t.ok(labelsMatch(f, { x: '', y: '1' }), 'labels: all');
  t.notOk(labelsMatch(f, { x: '' }), 'a missing label fails');
  t.ok(labelsMatch(parseFilters(['label!=z'], ['label']), { x: '' }), 'label!=');
  t.throws(() => parseFilters(['colour=red'], ['name']), /invalid filter 'colour'/, 'unknown key named');
  t.throws(() => parseFilters(['name'], ['name']), /bad format of filter/, 'no =');
});
