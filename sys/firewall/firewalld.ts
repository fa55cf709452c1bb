/**
 * firewalld, where it runs. Its forward chain (table `inet firewalld`) rejects what no zone or
 * policy allows, and a bridge tsnet creates is in no zone: a reject there wins over tsnet's accept,
 * so containers lose each other and egress. tsnet does what Docker's firewalld integration does
 * (zone `docker` + policy `docker-forwarding`), with its own names:
 *
 * - a zone `<name>` (default `tsnet`) with target ACCEPT, holding tsnet's bridges: firewalld accepts
 *   what comes from them (tsnet's own table still decides: isolation, internal networks, direct
 *   access);
 * - a policy `<name>-forwarding` (ingress zone ANY, egress zone `<name>`, target ACCEPT):
 *   firewalld accepts what goes into them (published ports, replies).
 *
 * firewalld creates zones and policies only in its permanent configuration (a reload makes them
 * live), so those two are created once, with `firewall-cmd --permanent` and one `--reload`, and kept
 * (as Docker keeps its zone). Bridges are bound at run time, per network, and unbound when the
 * network goes, through firewalld's D-Bus API with `dbus-send` (a C process of a few ms, where
 * `firewall-cmd` is a Python start of ~300 ms). Nothing else in firewalld's configuration is read
 * for ownership or changed.
 *
 * Detection costs no process where the system bus has no socket (no D-Bus, hence no firewalld),
 * else a few parallel `dbus-send` reads. `plan` is pure and golden-tested; `createFirewalld` applies.
 */
import { access } from 'node:fs/promises';
import { TsnetError } from '../../core/errors.js';
import { nullLogger, type Logger } from '../../core/log.js';
import type { IfName, NetnsRef } from '../../core/net.js';
import { execDetails, inNetns, run, type Argv } from '../exec.js';
import type { FirewallCallOptions, FirewallExec } from './api.js';

export const DEFAULT_SYSTEM_BUS = 'unix:path=/run/dbus/system_bus_socket';
const DEST = 'org.fedoraproject.FirewallD1';
const PATH = '/org/fedoraproject/FirewallD1';

/** What firewalld shows, as far as tsnet goes. */
export interface FirewalldState {
  readonly running: boolean;
  /** tsnet's zone exists (live). */
  readonly zone: boolean;
  /** tsnet's forwarding policy exists (live). */
  readonly policy: boolean;
  /** The interfaces bound to tsnet's zone. */
  readonly interfaces: readonly string[];
}

export const NOT_RUNNING: FirewalldState = { running: false, zone: false, policy: false, interfaces: [] };

export type FirewalldStep =
  | { readonly kind: 'create-zone' }
  | { readonly kind: 'create-policy' }
  | { readonly kind: 'reload' }
  | { readonly kind: 'bind'; readonly bridge: IfName }
  | { readonly kind: 'unbind'; readonly bridge: IfName };

export interface FirewalldNames {
  readonly zone: string;
  readonly policy: string;
}

export const firewalldNames = (name: string): FirewalldNames => ({ zone: name, policy: `${name}-forwarding` });

/** The steps that make firewalld let `bind` through and forget `unbind` (pure; none where it does not run). */
export function planFirewalld(s: FirewalldState, want: { readonly bind?: readonly IfName[]; readonly unbind?: readonly IfName[] }): FirewalldStep[] {
  if (!s.running) return [];
  const out: FirewalldStep[] = [];
  const binds = (want.bind ?? []).filter((b) => !s.interfaces.includes(b));
  if (binds.length > 0 || (want.bind ?? []).length > 0) {
    if (!s.zone) out.push({ kind: 'create-zone' });
    if (!s.policy) out.push({ kind: 'create-policy' });
    if (!s.zone || !s.policy) out.push({ kind: 'reload' });
  }
  // A reload keeps run-time interface bindings of zones that still exist; a fresh zone has none.
  for (const bridge of !s.zone ? (want.bind ?? []) : binds) out.push({ kind: 'bind', bridge });
  for (const bridge of want.unbind ?? []) if (s.zone && s.interfaces.includes(bridge)) out.push({ kind: 'unbind', bridge });
  return out;
}

const dbusSend = (bus: string, method: string, ...args: string[]): Argv => [
  'dbus-send', `--bus=${bus}`, '--print-reply', `--dest=${DEST}`, PATH, `${DEST}.${method}`, ...args,
];

/** The processes that carry out one step (pure; golden-tested). */
export function firewalldArgv(n: FirewalldNames, bus: string, step: FirewalldStep): Argv[] {
  switch (step.kind) {
    case 'create-zone':
      return [
        ['firewall-cmd', '--permanent', `--new-zone=${n.zone}`],
        ['firewall-cmd', '--permanent', `--zone=${n.zone}`, '--set-target=ACCEPT'],
        ['firewall-cmd', '--permanent', `--zone=${n.zone}`, '--set-description=tsnet\'s bridges (created and kept by tsnet)'],
      ];
    case 'create-policy':
      return [
        ['firewall-cmd', '--permanent', `--new-policy=${n.policy}`],
        // firewall-cmd takes one of these per call.
        ['firewall-cmd', '--permanent', `--policy=${n.policy}`, '--add-ingress-zone=ANY'],
        ['firewall-cmd', '--permanent', `--policy=${n.policy}`, `--add-egress-zone=${n.zone}`],
        ['firewall-cmd', '--permanent', `--policy=${n.policy}`, '--set-target=ACCEPT'],
      ];
    case 'reload':
      return [['firewall-cmd', '--reload']];
    case 'bind':
      // Moves the interface from another zone if something (NetworkManager) put it there.
      return [dbusSend(bus, 'zone.changeZoneOfInterface', `string:${n.zone}`, `string:${step.bridge}`)];
    case 'unbind':
      return [dbusSend(bus, 'zone.removeInterface', `string:${n.zone}`, `string:${step.bridge}`)];
  }
}

/** The `string "..."` values of a `dbus-send --print-reply` answer. */
export function parseDbusStrings(out: string): string[] {
  return [...out.matchAll(/^\s*string "((?:[^"\\]|\\.)*)"$/gm)].map((m) => m[1] ?? '');
}

export interface Firewalld {
  read(opts: FirewallCallOptions): Promise<FirewalldState>;
  /** Binds `bridge` to tsnet's zone (creating zone and policy once); nothing where firewalld does not run. */
  ensure(bridge: IfName, opts: FirewallCallOptions): Promise<void>;
  /** Unbinds bridges from tsnet's zone; succeeds if they are not bound or firewalld does not run. */
  remove(bridges: readonly IfName[], opts: FirewallCallOptions): Promise<void>;
  /** Of `bridges`, those firewalld would cut off (it runs and they are not in tsnet's zone). */
  blocked(s: FirewalldState, bridges: readonly IfName[]): IfName[];
}

export function createFirewalld(deps: { readonly netns: NetnsRef; readonly name: string; readonly systemBus?: string; readonly exec?: FirewallExec; readonly log?: Logger }): Firewalld {
  const exec: FirewallExec = deps.exec ?? run;
  const log = deps.log ?? nullLogger;
  const bus = deps.systemBus ?? DEFAULT_SYSTEM_BUS;
  const n = firewalldNames(deps.name);
  const env = { DBUS_SYSTEM_BUS_ADDRESS: bus };
  const call = (argv: Argv, opts: FirewallCallOptions): Promise<string> =>
    exec(inNetns(deps.netns, argv), { env, timeoutMs: 30_000, ...(opts.signal ? { signal: opts.signal } : {}) }).then((r) => r.stdout);
  /** A system bus without a socket file has no firewalld on it (abstract or TCP addresses are asked). */
  const busMissing = async (): Promise<boolean> => {
    const path = /^unix:path=([^,;]+)/.exec(bus)?.[1];
    return path !== undefined && !(await access(path).then(() => true, () => false));
  };
  const read = async (opts: FirewallCallOptions): Promise<FirewalldState> => {
    if (await busMissing()) return NOT_RUNNING;
    const ask = (method: string, ...args: string[]): Promise<{ ok: string } | { err: string }> =>
      call(dbusSend(bus, method, ...args), opts).then(
        (ok) => ({ ok }),
        (e: unknown) => ({ err: execDetails(e)?.stderr ?? (e instanceof Error ? e.message : String(e)) }),
      );
    const [zones, policies, ifs] = await Promise.all([ask('zone.getZones'), ask('policy.getPolicies'), ask('zone.getInterfaces', `string:${n.zone}`)]);
    if ('err' in zones) {
      if (/ServiceUnknown|NameHasNoOwner|Failed to open connection|No such file|Connection refused|not provided by any/i.test(zones.err)) return NOT_RUNNING;
      throw new TsnetError('UNAVAILABLE', `firewalld: cannot read its zones: ${zones.err.trim()}`);
    }
    const zone = parseDbusStrings(zones.ok).includes(n.zone);
    return {
      running: true,
      zone,
      policy: 'ok' in policies && parseDbusStrings(policies.ok).includes(n.policy),
      interfaces: zone && 'ok' in ifs ? parseDbusStrings(ifs.ok) : [],
    };
  };
  const apply = async (steps: readonly FirewalldStep[], opts: FirewallCallOptions): Promise<void> => {
    for (const step of steps) {
      for (const argv of firewalldArgv(n, bus, step)) {
        await call(argv, opts).catch((err: unknown) => {
          const d = execDetails(err);
          // firewall-cmd: a zone or policy someone created meanwhile.
          if (d !== undefined && /NAME_CONFLICT|ALREADY_ENABLED|ZONE_ALREADY_SET/.test(d.stdout + d.stderr)) return '';
          throw new TsnetError('UNAVAILABLE', `firewalld: ${argv.join(' ')}: ${(d?.stderr ?? String(err)).trim()}`, { cause: err });
        });
      }
    }
    if (steps.length > 0) log.info('firewalld: tsnet\'s zone updated', { steps: steps.map((s) => ('bridge' in s ? `${s.kind} ${s.bridge}` : s.kind)) });
  };
  return {
    read,
    async ensure(bridge, opts) {
      const s = await read(opts);
      await apply(planFirewalld(s, { bind: [bridge] }), opts);
    },
    async remove(bridges, opts) {
      if (bridges.length === 0) return;
      const s = await read(opts);
      await apply(planFirewalld(s, { unbind: bridges }), opts);
    },
    blocked: (s, bridges) => (s.running ? bridges.filter((b) => !s.zone || !s.interfaces.includes(b)) : []),
  };
}
