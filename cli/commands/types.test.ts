import t from 'tap';
import { EACH_REF_PARALLEL, eachRef, type Io } from './types.js';

function recorder(): { io: Io; lines: string[] } {
  const lines: string[] = [];
  return { lines, io: { out: (x) => void lines.push(`out:${String(x)}`), err: (x) => void lines.push(`err:${String(x)}`) } };
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('eachRef: several objects at once, bounded, lines in argument order', async (t) => {
  const { io, lines } = recorder();
  const refs = Array.from({ length: 20 }, (_, i) => `c${i}`);
  let inFlight = 0;
  let most = 0;
  await eachRef(refs, io, async (ref, io) => {
    inFlight++;
    most = Math.max(most, inFlight);
    await sleep(ref === 'c0' ? 30 : 1); // the first finishes last
    inFlight--;
    io.out(`${ref}\n`);
  });
  t.equal(most, EACH_REF_PARALLEL, 'as many at once as allowed, never more');
  t.same(lines, refs.map((r) => `out:${r}\n`), 'printed in the order given, though c0 finished last');
});

t.test('eachRef: every object is tried; failures printed in place; the first (in order) is the error', async (t) => {
  const { io, lines } = recorder();
  const tried: string[] = [];
  const err = await eachRef(['a', 'bad1', 'b', 'bad2'], io, async (ref, io) => {
    tried.push(ref);
    await sleep(ref === 'bad1' ? 20 : 1);
    if (ref.startsWith('bad')) throw new Error(`no such container: ${ref}`);
    io.out(`${ref}\n`);
  }).then(() => undefined, (e: unknown) => e as Error);
  t.same([...tried].sort(), ['a', 'b', 'bad1', 'bad2']);
  t.same(lines, ['out:a\n', 'err:Error: no such container: bad1\n', 'out:b\n', 'err:Error: no such container: bad2\n']);
  t.match(err?.message, /bad1/, 'the first failure in argument order');
  t.equal((err as { details?: Record<string, unknown> } | undefined)?.details?.['reported'], true, 'marked as already printed');
});

t.test('eachRef: the same object named twice is worked on once at a time', async (t) => {
  const { io } = recorder();
  let inside = 0;
  let overlap = false;
  await eachRef(['x', 'y', 'x', 'x'], io, async (ref) => {
    if (ref === 'x' && inside++ > 0) overlap = true;
    await sleep(5);
    if (ref === 'x') inside--;
  });
  t.notOk(overlap, 'never two at once for x');
});
