/**
 * tsnet's rules in OTHER firewalls' iptables chains (plan.ts `planLetThrough` says which): Docker's
 * DOCKER-USER, or the head of the filter table's FORWARD chain, for each family whose FORWARD chain
 * drops by default (Docker at its defaults, ufw, an admin's `iptables -P FORWARD DROP`). A drop in
 * any table or hook wins over tsnet's own accept, so without them such a host cuts tsnet's
 * containers off from each other (br_netfilter sends bridged frames through FORWARD too), from
 * the outside and from published ports.
 *
 * Every rule carries tsnet's network comment (`tsnet:net:<id>`), so tsnet finds and removes exactly
 * its own; nothing else in those chains is read for ownership, changed, flushed or reordered, and
 * no policy is touched. In DOCKER-USER they go before Docker's trailing `-j RETURN` (after the
 * admin's own rules there, which keep precedence); in FORWARD at its head.
 *
 * Used by both backends: the iptables backend computes these lines inside its own batch (same
 * table); the nftables backend calls `createHostChains`, which reads `iptables-save` and writes
 * one `iptables-restore --noflush` per family only when a line must change (never one process per
 * rule), and nothing at all on a host where no FORWARD chain drops. `iptables` here is whatever the
 * host's alternative points to (iptables-nft on Debian 12, or legacy): the one Docker and ufw use.
 */
import { isCode, wrap } from '../../core/errors.js';
import { nullLogger, type Logger } from '../../core/log.js';
import type { Family, IfName, NetnsRef, NetworkId } from '../../core/net.js';
import { inNetns, run } from '../exec.js';
import type { FirewallCallOptions, FirewallExec } from './api.js';
import { lineOf, mapIptError, parseSave, retryable, renderRestore, type IptNames, type IptRule, type RestoreLine, type SavedRule, type SavedState } from './iptables.js';
import { planLetThrough, type HostForward, type LetThroughRule } from './plan.js';

export const DOCKER_USER = 'DOCKER-USER';
const HOST_CHAINS: readonly string[] = ['FORWARD', DOCKER_USER];

/** What the filter table of one family does with forwarded packets (pure). */
export function hostForward(family: Family, saved: SavedState): HostForward {
  const dockerUser =
    (saved.chains.get('filter')?.has(DOCKER_USER) ?? false) &&
    saved.rules.some((r) => r.table === 'filter' && r.chain === 'FORWARD' && r.spec.at(-1) === DOCKER_USER && r.spec.at(-2) === '-j');
  return { family, policy: saved.policies.get('filter')?.get('FORWARD') === 'DROP' ? 'drop' : 'accept', dockerUser };
}

const netComment = (n: IptNames, id: NetworkId): string => `${n.comment}:net:${id}`;

/** A let-through rule as an iptables rule (pure; golden-tested). */
export function letThroughToIpt(n: IptNames, r: LetThroughRule): IptRule {
  return {
    table: 'filter',
    chain: r.chain,
    spec: [r.match === 'in' ? '-i' : '-o', r.bridge, '-m', 'comment', '--comment', netComment(n, r.owner), '-j', r.to === 'accept' ? 'ACCEPT' : n.forward],
  };
}

const key = (r: IptRule): string => `${r.chain}|${r.spec.join(' ')}`;

/** tsnet's rules (any owner) in the host chains of one family. */
export function ownHostRules(n: IptNames, saved: SavedState): SavedRule[] {
  return saved.rules.filter((r) => r.table === 'filter' && HOST_CHAINS.includes(r.chain) && r.comment?.startsWith(`${n.comment}:net:`) === true);
}

/**
 * The lines that make `owner`'s rules in the host chains exactly `wanted` (one family); none when
 * they already are. Wanted rules of one chain are inserted together, in order: in FORWARD at the
 * head, in DOCKER-USER before a trailing `-j RETURN` (Docker's), else at its end.
 */
export function letThroughFix(n: IptNames, saved: SavedState, owner: NetworkId, wanted: readonly IptRule[]): RestoreLine[] {
  const mine = ownHostRules(n, saved).filter((r) => r.comment === netComment(n, owner));
  if (mine.map(key).join('\n') === wanted.map(key).join('\n')) return [];
  const out = mine.map((r) => lineOf('-D', r));
  for (const chain of HOST_CHAINS) {
    const add = wanted.filter((r) => r.chain === chain);
    if (add.length === 0) continue;
    // Positions after the deletions above: the chain's rules that stay.
    const staying = saved.rules.filter((r) => r.table === 'filter' && r.chain === chain && !mine.includes(r));
    let pos: number | undefined;
    if (chain === 'FORWARD') pos = 1;
    else {
      const last = staying.at(-1);
      if (last && last.spec.length === 2 && last.spec[0] === '-j' && last.spec[1] === 'RETURN') pos = staying.length;
    }
    add.forEach((r, i) => out.push(pos === undefined ? lineOf('-A', r) : lineOf('-I', r, pos + i)));
  }
  return out;
}

/** The rules `planLetThrough` wants for one network in one family, as iptables rules. */
export function wantedLetThrough(n: IptNames, p: { readonly networkId: NetworkId; readonly bridge: IfName }, host: HostForward, to: LetThroughRule['to']): IptRule[] {
  return planLetThrough(p, [host], to).map((r) => letThroughToIpt(n, r));
}

/** Networks (of `bridges`) whose wanted let-through rules are not all in place in this family. */
export function blockedIn(n: IptNames, saved: SavedState, host: HostForward, bridges: ReadonlyMap<NetworkId, IfName>, to: LetThroughRule['to']): NetworkId[] {
  const have = new Set(ownHostRules(n, saved).map(key));
  const out: NetworkId[] = [];
  for (const [networkId, bridge] of bridges) {
    if (wantedLetThrough(n, { networkId, bridge }, host, to).some((r) => !have.has(key(r)))) out.push(networkId);
  }
  return out;
}

/** Every line that removes tsnet's rules from the host chains (one family). */
export function removeAllHostLines(n: IptNames, saved: SavedState): RestoreLine[] {
  return ownHostRules(n, saved).map((r) => lineOf('-D', r));
}

// ---------------------------------------------------------------------------------------------
// runtime, for the nftables backend

export interface HostChains {
  /** Makes the network's let-through rules match the host's state (adds, moves, removes). */
  ensure(p: { readonly networkId: NetworkId; readonly bridge: IfName }, opts: FirewallCallOptions): Promise<void>;
  /** Removes the network's rules from the host chains; succeeds if there are none. */
  remove(id: NetworkId, opts: FirewallCallOptions): Promise<void>;
  /** The host chains of each family that has iptables (read in parallel with other reads). */
  read(opts: FirewallCallOptions): Promise<readonly FamilyState[]>;
  /** Networks of `bridges` whose rules a dropping FORWARD chain needs and lacks, sorted. */
  blocked(states: readonly FamilyState[], bridges: ReadonlyMap<NetworkId, IfName>): NetworkId[];
  removeAll(opts: FirewallCallOptions): Promise<void>;
}

const BIN = { 4: { save: 'iptables-save', restore: 'iptables-restore' }, 6: { save: 'ip6tables-save', restore: 'ip6tables-restore' } } as const;

export interface FamilyState {
  readonly family: Family;
  readonly saved: SavedState;
  readonly host: HostForward;
}

export function createHostChains(deps: { readonly netns: NetnsRef; readonly names: IptNames; readonly exec?: FirewallExec; readonly log?: Logger }): HostChains {
  const exec: FirewallExec = deps.exec ?? run;
  const log = deps.log ?? nullLogger;
  const n = deps.names;
  /** The filter table of each family that has iptables at all (a host without it has nothing that drops there). */
  const read = async (opts: FirewallCallOptions): Promise<FamilyState[]> => {
    const all = await Promise.all(
      ([4, 6] as const).map(async (family) => {
        try {
          const r = await exec(inNetns(deps.netns, [BIN[family].save, '-t', 'filter']), opts.signal ? { signal: opts.signal } : {}).catch((err: unknown) => {
            throw mapIptError(err);
          });
          const saved = parseSave(r.stdout);
          return { family, saved, host: hostForward(family, saved) };
        } catch (err) {
          // Not installed, or no filter table to read (legacy iptables without its module, no IPv6):
          // nothing there drops forwarded packets.
          if (isCode(err, 'UNAVAILABLE')) {
            if (!/not installed/.test((err as Error).message)) log.debug('host firewall: iptables unreadable here', { family, err: (err as Error).message });
            return undefined;
          }
          throw err;
        }
      }),
    );
    return all.filter((x): x is FamilyState => x !== undefined);
  };
  const restore = async (family: Family, lines: readonly RestoreLine[], opts: FirewallCallOptions): Promise<void> => {
    if (lines.length === 0) return;
    await exec(inNetns(deps.netns, [BIN[family].restore, '--noflush', '--wait=10']), { input: renderRestore(lines), ...(opts.signal ? { signal: opts.signal } : {}) }).catch((err: unknown) => {
      throw mapIptError(err);
    });
  };
  /** Read, compute per family, apply; re-read and retry once when a concurrent writer moved a rule. */
  const transact = async (what: string, compute: (s: FamilyState) => RestoreLine[], opts: FirewallCallOptions): Promise<number> => {
    for (let attempt = 1; ; attempt++) {
      const states = await read(opts);
      let changed = 0;
      try {
        for (const s of states) {
          const lines = compute(s);
          await restore(s.family, lines, opts);
          changed += lines.length;
        }
        return changed;
      } catch (err) {
        if (attempt < 3 && retryable(err)) continue;
        throw wrap(what, err);
      }
    }
  };
  return {
    async ensure(p, opts) {
      const changed = await transact(`let ${p.bridge} through the host firewall`, (s) => letThroughFix(n, s.saved, p.networkId, wantedLetThrough(n, p, s.host, 'accept')), opts);
      if (changed > 0) log.info('host firewall: let-through rules written', { network: p.networkId, bridge: p.bridge, lines: changed });
    },
    async remove(id, opts) {
      const changed = await transact(`remove ${id}'s rules from the host firewall`, (s) => letThroughFix(n, s.saved, id, []), opts);
      if (changed > 0) log.info('host firewall: let-through rules removed', { network: id, lines: changed });
    },
    read,
    blocked(states, bridges) {
      return [...new Set(states.flatMap((s) => blockedIn(n, s.saved, s.host, bridges, 'accept')))].sort();
    },
    async removeAll(opts) {
      await transact('remove tsnet\'s rules from the host firewall', (s) => removeAllHostLines(n, s.saved), opts);
    },
  };
}
