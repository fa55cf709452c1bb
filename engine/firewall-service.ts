/**
 * The firewall watcher as a daemon service (issue #4): when rules are taken away (`nft flush
 * ruleset`, a firewall manager's reload, `iptables -F`), tsnet's networks and published ports are
 * restored from the records, by themselves, within a second or so. Events come from one long-lived
 * `nft monitor` (sys/firewall/monitor.ts); a slow periodic check covers what it cannot see
 * (iptables-legacy). Checks never overlap: one that is asked for while another runs runs after it.
 */
import type { Controller } from '../cnm/controller.js';
import type { Logger } from '../core/log.js';
import type { RulesetMonitor, WatchRuleset } from '../sys/firewall/api.js';
import type { DaemonService } from '../sys/api.js';

export interface FirewallServiceOptions {
  /** The ruleset watch in the namespace playing host (sys/firewall/monitor.ts). */
  readonly watch: WatchRuleset;
  readonly controller: () => Promise<Controller>;
  readonly log: Logger;
  /** Quiet time after the last event before a check (default 200 ms). */
  readonly debounceMs?: number;
  /** The periodic check (default 30 s). */
  readonly periodMs?: number;
}

export function createFirewallService(o: FirewallServiceOptions): DaemonService {
  const log = o.log.child({ component: 'firewall-watch' });
  let monitor: RulesetMonitor | undefined;
  let period: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  const counts = { checks: 0, restoredNetworks: 0, restoredEndpoints: 0, failures: 0 };
  let lastError: string | undefined;

  const checkOnce = async (): Promise<void> => {
    counts.checks++;
    try {
      const r = await (await o.controller()).reloadFirewall({ force: false });
      counts.restoredNetworks += r.networks.length;
      counts.restoredEndpoints += r.endpoints.length;
      if (r.networks.length + r.endpoints.length > 0) log.warn('rules were taken away; restored them from the records', { networks: r.networks, endpoints: r.endpoints.length });
    } catch (err) {
      counts.failures++;
      lastError = err instanceof Error ? err.message : String(err);
      log.error('restoring the firewall failed', { err: lastError });
    }
  };
  const check = (): Promise<void> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await checkOnce();
      } while (again);
      running = undefined;
    })();
    return running;
  };

  return {
    name: 'firewall',
    async start() {
      monitor = o.watch({ onLoss: () => void check(), debounceMs: o.debounceMs ?? 200, log });
      period = setInterval(() => void check(), o.periodMs ?? 30_000);
      period.unref();
      await check();
    },
    // The records are read at every check; a reload has nothing to refresh.
    reload: async () => undefined,
    async stop() {
      if (period) clearInterval(period);
      await monitor?.close();
      await running;
    },
    status: () => ({ ...counts, ...(lastError !== undefined ? { lastError } : {}) }),
  };
}
