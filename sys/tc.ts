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
import { parseIfName, type IfName, type NetnsRef } from '../core/net.js';
import { execDetails, inNetns, run } from './exec.js';

export interface Shape {
  /** Bits per second. */
  readonly rate: number;
  /** Bits. */
  readonly burst: number;
}

export interface Tc {
  readonly ns: NetnsRef;
  /** Replaces the root qdisc of `dev` with a token bucket at `rate`. */
  shape(dev: IfName, s: Shape): Promise<void>;
}
export type TcFor = (ns: NetnsRef) => Tc;

/** The tc arguments for `s` on `dev` (pure). The burst becomes bytes, at least one frame. */
export function tcArgs(dev: IfName, s: Shape): string[] {
  const d = parseIfName(dev, 'dev');
  if (!Number.isInteger(s.rate) || s.rate <= 0 || !Number.isInteger(s.burst) || s.burst <= 0) {
    throw new TsnetError('INVALID_CONFIG', `bandwidth: rate and burst must be positive integers (got ${s.rate}, ${s.burst})`, { details: { field: 'bandwidth' } });
  }
  return ['qdisc', 'replace', 'dev', d, 'root', 'tbf', 'rate', `${s.rate}bit`, 'burst', String(Math.max(1600, Math.ceil(s.burst / 8))), 'latency', '25ms'];
}

export function createTcFor(): TcFor {
  return (ns) => ({
    ns,
    async shape(dev, s) {
      const args = tcArgs(dev, s);
      try {
        await run(inNetns(ns, ['tc', ...args]));
      } catch (err) {
        const stderr = execDetails(err)?.stderr.trim() ?? '';
        const code = /Cannot find device|No such device/.test(stderr) ? 'NOT_FOUND' : /Invalid|Illegal|invalid/.test(stderr) ? 'INVALID_CONFIG' : 'INTERNAL';
        throw new TsnetError(code, `tc on ${dev}: ${stderr || (err instanceof Error ? err.message : String(err))}`, { cause: err, details: { field: 'bandwidth' } });
      }
    },
  });
}
