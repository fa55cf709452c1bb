/**
 * The host's whole ruleset as text, for `tsnet doctor`: what nft shows (every table, tsnet's and
 * others': ufw, firewalld, Docker) and what iptables-legacy holds, which nft cannot show.
 */
import type { NetnsRef } from '../../core/net.js';
import { inNetns, run, type Argv } from '../exec.js';

export interface HostRules {
  /** `nft list ruleset`, or undefined with the reason in nftError. */
  readonly nftRuleset: string | undefined;
  readonly nftError?: string;
  /** `iptables-legacy-save`, when that binary exists and works. */
  readonly legacyRules?: string;
  /** `iptables-save -t filter` / `ip6tables-save -t filter` (the host's alternative: nft or legacy), where they work. */
  readonly iptables: { readonly 4?: string; readonly 6?: string };
}

async function output(argv: Argv): Promise<{ ok: string } | { err: string }> {
  return run(argv, { timeoutMs: 10_000 }).then(
    (r) => ({ ok: r.stdout }),
    (e: unknown) => ({ err: e instanceof Error ? (e.message.split('\n')[0] ?? '') : String(e) }),
  );
}

export async function readHostRules(ns: NetnsRef): Promise<HostRules> {
  const [nft, legacy, v4, v6] = await Promise.all([
    output(inNetns(ns, ['nft', 'list', 'ruleset'])),
    output(inNetns(ns, ['iptables-legacy-save'])),
    output(inNetns(ns, ['iptables-save', '-t', 'filter'])),
    output(inNetns(ns, ['ip6tables-save', '-t', 'filter'])),
  ]);
  return {
    nftRuleset: 'ok' in nft ? nft.ok : undefined,
    ...('err' in nft ? { nftError: nft.err } : {}),
    ...('ok' in legacy ? { legacyRules: legacy.ok } : {}),
    iptables: { ...('ok' in v4 ? { 4: v4.ok } : {}), ...('ok' in v6 ? { 6: v6.ok } : {}) },
  };
}
