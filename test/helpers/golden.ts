/**
 * Golden files under test/golden/: compared with the actual output, or rewritten when the test runs
 * with TSNET_UPDATE_GOLDEN=1 (never edited by hand).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';

const ROOT = fileURLToPath(new URL('../golden/', import.meta.url));

/** A comparer for the golden files of `area` (a folder of test/golden/). */
export function goldenIn(area: string): (t: Test, name: string, actual: string) => Promise<void> {
  return async (t, name, actual) => {
    const path = join(ROOT, area, name);
    if (process.env['TSNET_UPDATE_GOLDEN'] === '1') {
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, actual);
      t.pass(`golden ${name} written`);
      return;
    }
    const expected = await readFile(path, 'utf8').catch(() => undefined);
    if (expected === undefined) t.fail(`golden ${name} missing: run with TSNET_UPDATE_GOLDEN=1`);
    else t.equal(actual, expected, `golden ${name}`);
  };
}
