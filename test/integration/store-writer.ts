/**
 * A worker process for the store's cross-process tests and benchmark (spawned by
 * test/integration/store-procs.ts; bundled first so that 50 of them start quickly). Protocol: lines
 * on stdout ("ready", "held", "waiting", "acquired <epoch ms>", "done <json>"); where it says
 * "ready" it then waits for a line "go" on stdin, so that all workers start together.
 *
 *   rmw STATE INDEX N RECORDS IPS   N read-modify-write increments of one shared counter, RECORDS
 *                                    records of its own, IPS reservations from a shared /24 pool
 *   hold STATE LOCK                  takes LOCK, says "held", then blocks its thread forever
 *   wait STATE LOCK                  says "waiting", waits for LOCK, says "acquired <epoch ms>"
 *   crash STATE INDEX SIZE           rewrites records of SIZE bytes forever (to be SIGKILLed)
 *   naive STATE INDEX SIZE           the same with plain writeFile (no temp+rename): the baseline
 *   lockbench STATE IMPL N           N x (lock; read+write a counter file; unlock), IMPL socket|flock
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { openFsStore } from '../../sys/store/fs.js';
import { BlobSpec, CounterSpec, OwnSpec } from './store-procs.js';

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};
const now = (): number => performance.timeOrigin + performance.now();

function waitForGo(): Promise<void> {
  return new Promise((resolve) => {
    const rl = createInterface({ input: process.stdin });
    rl.on('line', (l) => {
      if (l.trim() === 'go') {
        rl.close();
        resolve();
      }
    });
  });
}

/** flock(1) as the lock holder: `stdbuf -oL flock --verbose FILE cat`; ending stdin releases. */
async function flockAcquire(file: string): Promise<() => Promise<void>> {
  const c = spawn('stdbuf', ['-oL', 'flock', '--verbose', file, 'cat'], { stdio: ['pipe', 'pipe', 'ignore'], env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' } });
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  let buf = '';
  await new Promise<void>((resolve, reject) => {
    c.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes('executing')) resolve();
    });
    c.once('error', reject);
    void exited.then(() => reject(new Error(`flock exited: ${buf}`)));
  });
  return async () => {
    c.stdin.end();
    await exited;
  };
}

async function main(argv: readonly string[]): Promise<void> {
  const [mode, state = '', a1 = '', a2 = '', a3 = '', a4 = ''] = argv;
  switch (mode) {
    case 'rmw': {
      const [index, n, records, ips] = [Number(a1), Number(a2), Number(a3), Number(a4)];
      const store = await openFsStore({ dir: state, lockTimeoutMs: 50_000 });
      const counter = store.collection(CounterSpec);
      const own = store.collection(OwnSpec);
      const pool = store.reservations('pool-v4');
      say('ready');
      await waitForGo();
      const t0 = now();
      const got: string[] = [];
      let probes = 0;
      let start = (index * 37) % 254;
      for (let i = 0; i < n; i++) {
        await counter.upsert('shared', (cur) => ({ n: (cur?.n ?? 0) + 1 }));
        if (i < records) await own.create(`w${index}-${i}`, { worker: index, seq: i, note: `record ${i} of worker ${index}` });
        if (i < ips) {
          for (let k = 0; k < 254; k++) {
            const key = `10.9.0.${((start + k) % 254) + 1}`;
            probes++;
            if (await pool.reserve(key, `worker-${index}`)) {
              got.push(key);
              start = (start + k + 1) % 254;
              break;
            }
          }
        }
      }
      say(`done ${JSON.stringify({ index, ips: got, probes, ms: now() - t0 })}`);
      return;
    }
    case 'hold': {
      const store = await openFsStore({ dir: state });
      await store.withLock(a1, async () => {
        say('held');
        // Block the thread (no CPU): the event loop never runs again, so this process cannot even
        // accept connections; only its death frees the lock.
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 120_000);
      });
      return;
    }
    case 'wait': {
      const store = await openFsStore({ dir: state });
      say('waiting');
      await store.withLock(a1, async () => say(`acquired ${now()}`), { timeoutMs: 30_000 });
      return;
    }
    case 'crash':
    case 'naive': {
      const [index, size] = [Number(a1), Number(a2)];
      const store = await openFsStore({ dir: state });
      const blobs = store.collection(BlobSpec);
      const naiveDir = join(state, 'naive');
      await mkdir(naiveDir, { recursive: true });
      say('ready');
      await waitForGo();
      for (let seq = 0; seq < 1_000_000; seq++) {
        const rec = { writer: index, seq, len: size, payload: String(seq % 10).repeat(size) };
        const id = `b${index}-${seq % 3}`;
        if (mode === 'crash') await blobs.put(id, rec);
        else await writeFile(join(naiveDir, `${id}.json`), JSON.stringify({ schemaVersion: 1, id, record: rec }));
      }
      return;
    }
    case 'lockbench': {
      const [impl, n] = [a1, Number(a2)];
      const store = await openFsStore({ dir: state, lockTimeoutMs: 120_000 });
      const file = join(state, 'bench-counter');
      const lockFile = join(state, 'bench.flock');
      const bump = async (): Promise<void> => {
        const cur = Number((await readFile(file, 'utf8').catch(() => '0')) || '0');
        await writeFile(file, String(cur + 1));
      };
      say('ready');
      await waitForGo();
      const t0 = now();
      for (let i = 0; i < n; i++) {
        if (impl === 'flock') {
          const release = await flockAcquire(lockFile);
          try {
            await bump();
          } finally {
            await release();
          }
        } else {
          await store.withLock('bench', bump);
        }
      }
      say(`done ${JSON.stringify({ ms: now() - t0 })}`);
      return;
    }
    default:
      throw new Error(`unknown mode ${String(mode)}`);
  }
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`store-writer: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
