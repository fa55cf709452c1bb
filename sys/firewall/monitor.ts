/**
 * Watches the kernel's ruleset for rules being taken away (`nft flush ruleset`, a firewall
 * manager's reload, `iptables -F`): one long-lived `nft monitor ruleset` process in the namespace,
 * whose event lines are filtered here. Element deletions are ignored (tsnet removes map elements
 * itself on every container removal); table, chain, rule and set deletions and flushes are
 * reported, batched: `onLoss` runs once per quiet period (`debounceMs`) after them. The process is
 * restarted when it dies; `close` ends it.
 */
import type { Logger } from '../../core/log.js';
import type { NetnsRef } from '../../core/net.js';
import { inNetns, spawnLongLived, type LongLived } from '../exec.js';

export interface RulesetMonitor {
  close(): Promise<void>;
}

/** Whether a `nft monitor` line says that something that can hold tsnet's rules went away. */
export function isLossEvent(line: string): boolean {
  return /^(delete|flush) (table|chain|rule|set|map|ruleset)\b/.test(line.trim()) || line.trim() === 'flush ruleset';
}

export function watchRuleset(ns: NetnsRef, opts: { readonly onLoss: () => void; readonly debounceMs?: number; readonly log?: Logger }): RulesetMonitor {
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
      if (lines.some(isLossEvent)) fire();
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
