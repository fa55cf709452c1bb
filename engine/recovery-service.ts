/**
 * Crash recovery as a daemon service: what commands no longer do on their hot path. Each command
 * recovers only the objects it touches (a name held by a half-made container, a pool full of a
 * crash's addresses); the full pass over every record (containers whose exit nobody observed,
 * sandboxes and endpoints a killed command left half-made, addresses without owner, missing bridges
 * and rules) runs here: soon after the daemon starts, then every `periodMs`. It never blocks the
 * daemon's start (a CLI waiting for the daemon to answer does not wait for it), passes never
 * overlap, and each pass ends with a full reload of the other services (a safety net for a change
 * whose notification was lost, e.g. by a writer killed between its write and its notification).
 */
import type { Logger } from '../core/log.js';
import type { DaemonService } from '../sys/api.js';

export interface RecoveryServiceOptions {
  readonly recover: () => Promise<void>;
  /** A full reload of the daemon's services (after each pass). */
  readonly reloadAll: () => Promise<void>;
  readonly log: Logger;
  /** Delay of the first pass after start (default 1 s). */
  readonly firstMs?: number;
  /** Between passes (default 60 s). */
  readonly periodMs?: number;
}

export function createRecoveryService(o: RecoveryServiceOptions): DaemonService {
  const log = o.log.child({ component: 'recovery' });
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;
  const st = { passes: 0, failures: 0, lastMs: 0 };
  let lastError: string | undefined;

  const pass = (): Promise<void> => {
    running ??= (async () => {
      const t0 = performance.now();
      try {
        await o.recover();
        await o.reloadAll();
        st.passes++;
      } catch (err) {
        st.failures++;
        lastError = err instanceof Error ? err.message : String(err);
        log.warn('recovery pass failed', { err: lastError });
      } finally {
        st.lastMs = Math.round(performance.now() - t0);
        running = undefined;
      }
    })();
    return running;
  };
  const schedule = (ms: number): void => {
    if (stopped) return;
    timer = setTimeout(() => {
      void pass().then(() => schedule(o.periodMs ?? 60_000));
    }, ms);
    timer.unref();
  };

  return {
    name: 'recovery',
    async start() {
      schedule(o.firstMs ?? 1_000);
    },
    reload: async () => undefined,
    async stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      await running;
    },
    status: () => ({ ...st, ...(lastError !== undefined ? { lastError } : {}) }),
  };
}
