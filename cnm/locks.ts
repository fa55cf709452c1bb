/**
 * The controller's locks and their one order. A task may hold several locks only when it takes
 * them in this order (rank strictly increasing), so no two tasks can wait for each other:
 *
 *   container/<id>  (the CLI's: a container's whole run/rm)
 *   < sandboxes     (indexing the names of sandboxes recorded before the name index, once)
 *   < networks      (network records: create, delete, firewall reload)
 *   < sandbox:<id>  (one sandbox: its creation, its endpoints: connect, disconnect, delete)
 *   < endpoint:<id> (one door endpoint: the Docker plugin's create/delete/publish)
 *   < ports         (host ports: choose, publish, record)
 *   < switch:<name> (one switch's creation: links.ts)
 *   < link:<id>     (one link's creation and impairments: links.ts)
 *
 * `checkLockOrder` wraps a state's `withLock` and fails an out-of-order acquisition at once
 * (INTERNAL, naming both locks) instead of letting it deadlock some day: the controller's unit
 * tests run every operation through it, and production does too (the cost is one
 * AsyncLocalStorage lookup per lock). Names are unique by exclusive reservations, not by a lock
 * (state.ts NameIndex).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { TsnetError } from '../core/errors.js';

export const LOCK_ORDER = ['container', 'sandboxes', 'networks', 'sandbox', 'endpoint', 'ports', 'switch', 'link'] as const;
export type LockKind = (typeof LOCK_ORDER)[number];

/** The rank of a lock name ("sandbox:abc" → the rank of "sandbox"); INTERNAL for a name outside the order. */
export function lockRank(name: string): number {
  const kind = name.split(/[:/]/)[0] ?? '';
  const r = (LOCK_ORDER as readonly string[]).indexOf(kind);
  if (r < 0) throw new TsnetError('INTERNAL', `lock ${name}: not in the lock order (${LOCK_ORDER.join(' < ')})`);
  return r;
}

/** A lock function; `timeoutMs` 0 means "only if free now". */
export type WithLock = <T>(name: string, fn: () => Promise<T>, opts?: { readonly timeoutMs?: number }) => Promise<T>;

/** `withLock` that refuses to take a lock of lower or equal rank than one the task already holds. */
export function checkLockOrder(withLock: WithLock): WithLock {
  const held = new AsyncLocalStorage<readonly string[]>();
  return <T>(name: string, fn: () => Promise<T>, opts?: { readonly timeoutMs?: number }): Promise<T> => {
    const stack = held.getStore() ?? [];
    const rank = lockRank(name);
    const top = stack.at(-1);
    if (top !== undefined && lockRank(top) >= rank) {
      return Promise.reject(new TsnetError('INTERNAL', `lock order: ${name} taken while holding ${top} (order: ${LOCK_ORDER.join(' < ')})`, { details: { held: [...stack], wanted: name } }));
    }
    return withLock(name, () => held.run([...stack, name], fn), opts);
  };
}
