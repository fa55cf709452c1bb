/**
 * Watches the kernel's ruleset for rules being taken away (`nft flush ruleset`, a firewall
 * manager's reload, `iptables -F`): one long-lived `nft monitor ruleset` process in the namespace,
 * whose event lines are filtered here. Element deletions are ignored (tsnet removes map elements
 * itself on every container removal); table, chain, rule and set deletions and flushes are
 * reported, batched: `onLoss` runs once per quiet period (`debounceMs`) after them. So are chains
 * created or re-declared in iptables' filter tables (iptables-nft shows them here): Docker starting
 * (DOCKER-USER created, FORWARD policy set to drop) or an admin's `iptables -P FORWARD DROP`, after
 * which tsnet's let-through rules are needed. The process is restarted when it dies; `close` ends it.
 */
import type { NetnsRef } from '../../core/net.js';
import { inNetns, spawnLongLived, type LongLived } from '../exec.js';
import type { RulesetMonitor, RulesetWatchOptions } from './api.js';

export type { RulesetMonitor };

/** Whether a `nft monitor` line says that something that can hold tsnet's rules went away. */
export function isLossEvent(line: string): boolean {
  return /^(delete|flush) (table|chain|rule|set|map|ruleset)\b/.test(line.trim()) || line.trim() === 'flush ruleset';
}

/** Whether a line says that iptables' forward filtering may have changed (a new chain, a policy). */
export function isHostFirewallEvent(line: string): boolean {
  return /^(add|create) chain ip6? filter /.test(line.trim());
}

export function watchRuleset(ns: NetnsRef, opts: RulesetWatchOptions): RulesetMonitor {
  const debounceMs = opts.debounceMs ?? 200;
  let proc: LongLived | undefined;
  let timer: NodeJS.Timeout | undefined;
  let restart: NodeJS.Timeout | undefined;
  let closed = false;
  const fire = (): void => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      if (!closed) opts.onLoss();
    }, debounceMs);
  };
  const start = (): void => {
    const p = spawnLongLived(inNetns(ns, ['nft', 'monitor', 'ruleset']));
    proc = p;
    let buf = '';
    p.child.stdout.setEncoding('utf8');
    p.child.stdout.on('data', (d: string) => {
      buf += d;
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      if (lines.some((l) => isLossEvent(l) || isHostFirewallEvent(l))) fire();
    });
    p.child.stderr.on('data', () => undefined);
    p.child.once('error', (err) => opts.log?.warn('cannot watch the ruleset (nft monitor)', { err: err.message }));
    p.child.once('exit', (code, signal) => {
      if (closed) return;
      opts.log?.warn('nft monitor exited; restarting it in 1 s', { code, signal });
      // Whatever happened while no monitor ran is checked once it is back.
      restart = setTimeout(() => {
        if (closed) return;
        start();
        fire();
      }, 1000);
    });
  };
  start();
  return {
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      if (restart) clearTimeout(restart);
      if (proc) {
        proc.child.kill('SIGTERM');
        await proc.close(500);
      }
    },
  };
}
