/**
 * Traffic shaping with tc(8), for the CNI `bandwidth` capability: a token bucket filter (tbf) as
 * the root qdisc of an interface, which limits what LEAVES it. One `tc` process per call, in the
 * namespace the handle is bound to (nsenter for a namespace file). tsnet-bridge shapes traffic to
 * a container on the host end of its veth and traffic from it on the container end (the kernel
 * here has neither the police action nor matchall, and a tbf at the source needs no ifb device);
 * a container with CAP_NET_ADMIN could lift its own egress limit. Deleting the veth deletes the
 * qdiscs.
 */
import { TsnetError } from '../core/errors.js';
import { parseIfName, type IfName } from '../core/net.js';
import { execDetails, inNetns, run } from './exec.js';
import type { Impairment, Shape, Tc, TcFor } from './api.js';

export type { Impairment, Shape, Tc, TcFor };


/** The tc arguments for `s` on `dev` (pure). The burst becomes bytes, at least one frame. */
export function tcArgs(dev: IfName, s: Shape): string[] {
  const d = parseIfName(dev, 'dev');
  if (!Number.isInteger(s.rate) || s.rate <= 0 || !Number.isInteger(s.burst) || s.burst <= 0) {
    throw new TsnetError('INVALID_CONFIG', `bandwidth: rate and burst must be positive integers (got ${s.rate}, ${s.burst})`, { details: { field: 'bandwidth' } });
  }
  return ['qdisc', 'replace', 'dev', d, 'root', 'tbf', 'rate', `${s.rate}bit`, 'burst', String(Math.max(1600, Math.ceil(s.burst / 8))), 'latency', '25ms'];
}

/** Whether an impairment needs netem (anything but a rate). */
export const needsNetem = (imp: Impairment): boolean => imp.delayUs !== undefined || imp.jitterUs !== undefined || imp.lossPct !== undefined;

/**
 * The tc commands (argv after `tc`) that make `dev`'s root qdisc what `imp` says (pure):
 * - nothing set: delete the root qdisc (the kernel's default comes back);
 * - a rate only: a tbf root, burst 10 ms of the rate (at least one frame), queue bounded at 25 ms;
 * - delay/jitter/loss: a netem root, and with a rate a tbf child of it (netem's own `rate` models a
 *   link's serialisation delay, not a shaper: tbf is what the rate-only case uses, so a rate means
 *   the same with or without netem).
 * Every command is a `replace`, so applying a plan again, or another plan, needs no teardown first.
 */
export function impairPlan(dev: IfName, imp: Impairment): string[][] {
  const d = parseIfName(dev, 'dev');
  const bad = (field: string, msg: string): TsnetError => new TsnetError('INVALID_CONFIG', `impair.${field}: ${msg}`, { details: { field: `impair.${field}` } });
  if (imp.rate !== undefined && (!Number.isInteger(imp.rate) || imp.rate <= 0)) throw bad('rate', `must be a positive number of bits per second (got ${imp.rate})`);
  for (const [k, v] of [['delay', imp.delayUs], ['jitter', imp.jitterUs]] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 0)) throw bad(k, `must be a whole number of microseconds, at least 0 (got ${v})`);
  }
  if (imp.jitterUs !== undefined && imp.delayUs === undefined) throw bad('jitter', 'needs a delay');
  if (imp.lossPct !== undefined && !(imp.lossPct >= 0 && imp.lossPct <= 100)) throw bad('loss', `must be a percentage from 0 to 100 (got ${imp.lossPct})`);
  const tbf = (rate: number): string[] => ['tbf', 'rate', `${rate}bit`, 'burst', String(Math.max(1600, Math.ceil(rate / 800))), 'latency', '25ms'];
  if (!needsNetem(imp)) {
    return imp.rate === undefined ? [['qdisc', 'del', 'dev', d, 'root']] : [['qdisc', 'replace', 'dev', d, 'root', ...tbf(imp.rate)]];
  }
  const netem = ['netem'];
  if (imp.delayUs !== undefined) netem.push('delay', `${imp.delayUs}us`, ...(imp.jitterUs !== undefined ? [`${imp.jitterUs}us`] : []));
  if (imp.lossPct !== undefined) netem.push('loss', `${imp.lossPct}%`);
  const plan = [['qdisc', 'replace', 'dev', d, 'root', 'handle', '1:', ...netem]];
  if (imp.rate !== undefined) plan.push(['qdisc', 'replace', 'dev', d, 'parent', '1:1', 'handle', '10:', ...tbf(imp.rate)]);
  return plan;
}

/** tc's stderr as a code: a missing device, a qdisc kind the kernel lacks, a refused value. */
function tcError(err: unknown, dev: IfName, field: string): TsnetError {
  const stderr = execDetails(err)?.stderr.trim() ?? '';
  const code = /Cannot find device|No such device/.test(stderr) ? 'NOT_FOUND'
    : /Specified qdisc kind is unknown|Unknown qdisc/.test(stderr) ? 'UNAVAILABLE'
    : /Invalid|Illegal|invalid/.test(stderr) ? 'INVALID_CONFIG' : 'INTERNAL';
  return new TsnetError(code, `tc on ${dev}: ${stderr || (err instanceof Error ? err.message : String(err))}`, { cause: err, details: { field } });
}

/** Deleting a root qdisc that is the kernel's default: nothing of ours to remove. */
const NO_QDISC = /Cannot delete qdisc with handle of zero|Cannot find specified qdisc|No such file or directory/;

/**
 * Whether this kernel has sch_netem: adds a netem qdisc to the loopback of a throwaway namespace
 * (`unshare --net`: the namespace, and the qdisc, vanish with the process). One process; callers
 * ask once and keep the answer.
 */
export async function probeNetem(): Promise<boolean> {
  try {
    await run(['unshare', '--net', 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms'], { timeoutMs: 10_000 });
    return true;
  } catch (err) {
    const stderr = execDetails(err)?.stderr ?? '';
    if (/Specified qdisc kind is unknown|Unknown qdisc|not supported|No such file or directory/i.test(stderr)) return false;
    throw tcError(err, 'lo' as IfName, 'impair');
  }
}

export function createTcFor(): TcFor {
  return (ns) => ({
    ns,
    async shape(dev, s) {
      const args = tcArgs(dev, s);
      try {
        await run(inNetns(ns, ['tc', ...args]));
      } catch (err) {
        throw tcError(err, dev, 'bandwidth');
      }
    },
    async impair(dev, imp) {
      const plan = impairPlan(dev, imp);
      // One tc process for the whole plan (`tc -batch -`: one command a line, stops at the first error).
      const isDelete = plan.length === 1 && plan[0]?.[1] === 'del';
      try {
        await run(inNetns(ns, ['tc', '-batch', '-']), { input: `${plan.map((c) => c.join(' ')).join('\n')}\n` });
      } catch (err) {
        if (isDelete && NO_QDISC.test(execDetails(err)?.stderr ?? '')) return;
        throw tcError(err, dev, 'impair');
      }
    },
  });
}
