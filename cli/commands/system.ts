/**
 * Host-level commands: `tsnet doctor` (what on this host affects published ports, with advice) and
 * `tsnet firewall reload` (re-apply tsnet's rules from the records after someone flushed them).
 */
import { readdir } from 'node:fs/promises';
import type { Controller } from '../../cnm/controller.js';
import { TsnetError } from '../../core/errors.js';
import type { NetnsRef } from '../../core/net.js';
import { readHostRules } from '../../sys/firewall/host-rules.js';
import type { Firewall } from '../../sys/firewall/api.js';
import { bool, parseArgs, str, usage, type FlagSpec } from '../args.js';
import { diagnose, formatFindings, type HostFacts } from '../doctor.js';
import { readOptional } from '../engine.js';
import type { Command, Io } from './types.js';

export interface SystemDeps {
  readonly controller: Controller;
  readonly firewall: Firewall;
  readonly hostNs: NetnsRef;
}

const HELP: FlagSpec = { name: 'help', type: 'boolean', help: 'show this help' };

async function processNames(): Promise<string[]> {
  const pids = (await readdir('/proc').catch(() => [])).filter((d) => /^\d+$/.test(d));
  const names = await Promise.all(pids.map((p) => readOptional(`/proc/${p}/comm`)));
  return [...new Set(names.filter((n): n is string => n !== undefined).map((n) => n.trim()))];
}

async function gather(d: SystemDeps): Promise<HostFacts> {
  const [rules, ufwConf, ufwDefaults, processes, listing] = await Promise.all([
    readHostRules(d.hostNs),
    readOptional('/etc/ufw/ufw.conf'),
    readOptional('/etc/default/ufw'),
    processNames(),
    d.firewall.list().catch(() => undefined),
  ]);
  const sysctls: Record<string, string | undefined> = {};
  for (const k of ['net.ipv4.ip_forward', 'net.bridge.bridge-nf-call-iptables']) sysctls[k] = (await readOptional(`/proc/sys/${k.replaceAll('.', '/')}`))?.trim();
  const nets = (await d.controller.listNetworks()).filter((n) => n.driver === 'bridge' && n.status === 'ready');
  let withPorts = 0;
  for (const sb of await d.controller.listSandboxes()) withPorts += (await d.controller.endpointsOf(sb.id)).filter((e) => e.ports.length > 0).length;
  return {
    backend: d.firewall.backend,
    ...rules,
    ...(ufwConf !== undefined ? { ufwConf } : {}),
    ...(ufwDefaults !== undefined ? { ufwDefaults } : {}),
    processes,
    sysctls,
    records: { networks: nets.length, endpointsWithPorts: withPorts },
    kernel: listing === undefined ? undefined : { networks: listing.networks.length, endpointsWithPorts: listing.endpoints.length },
  };
}

export const systemCommands = (deps: () => Promise<SystemDeps>): Record<string, Command> => ({
  doctor: {
    summary: 'Check the host for what affects published ports and container traffic',
    async run(argv: readonly string[], io: Io) {
      const specs: FlagSpec[] = [{ name: 'format', type: 'string', help: 'json: the findings as JSON', placeholder: 'FORMAT' }, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('doctor [OPTIONS]', 'Report firewall managers (ufw, firewalld), forward policies, sysctls and whether tsnet\'s rules match its records.', specs, 'tsnet doctor'));
      const format = str(p, 'format');
      if (format !== undefined && format !== 'json') throw new TsnetError('INVALID_CONFIG', `format: expected json, got ${JSON.stringify(format)}`, { details: { field: 'format' } });
      const findings = diagnose(await gather(await deps()));
      io.out(format === 'json' ? `${JSON.stringify(findings, null, 2)}\n` : formatFindings(findings));
      return findings.some((f) => f.level === 'error') ? 1 : 0;
    },
  },
  firewall: {
    summary: 'firewall reload: re-apply tsnet\'s rules from its records',
    async run(argv: readonly string[], io: Io) {
      const p = parseArgs(argv, [HELP]);
      const [sub] = p.positionals;
      if (bool(p, 'help') || sub === undefined) {
        io.out(usage('firewall reload', 'Re-apply every network\'s firewall policy and every published port from tsnet\'s records (after `nft flush ruleset` or a firewall manager\'s reload).', [HELP], 'tsnet firewall reload'));
        return sub === undefined && !bool(p, 'help') ? 2 : 0;
      }
      if (sub !== 'reload' || p.positionals.length > 1) throw new TsnetError('INVALID_CONFIG', `firewall: unknown subcommand ${JSON.stringify(p.positionals.join(' '))}; expected "reload"`, { details: { field: 'firewall' } });
      const r = await (await deps()).controller.reloadFirewall();
      io.out(`reloaded: ${r.networks.length} network(s) (${r.networks.join(', ') || '-'}), published ports of ${r.endpoints.length} container(s)\n`);
    },
  },
});
