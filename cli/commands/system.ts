/**
 * Host-level commands: `tsnet doctor` (what on this host affects published ports, with advice) and
 * `tsnet firewall reload` (re-apply tsnet's rules from the records after someone flushed them).
 */
import { TsnetError } from '../../core/errors.js';
import { diagnose, formatFindings } from '../../engine/doctor.js';
import { gatherHostFacts, type SystemDeps } from '../../engine/engine.js';
import { bool, parseArgs, str, usage, type FlagSpec } from '../args.js';
import type { Command, Io } from './types.js';

const HELP: FlagSpec = { name: 'help', type: 'boolean', help: 'show this help' };

export const systemCommands = (deps: () => Promise<SystemDeps>): Record<string, Command> => ({
  doctor: {
    summary: 'Check the host for what affects published ports and container traffic',
    async run(argv: readonly string[], io: Io) {
      const specs: FlagSpec[] = [{ name: 'format', type: 'string', help: 'json: the findings as JSON', placeholder: 'FORMAT' }, HELP];
      const p = parseArgs(argv, specs);
      if (bool(p, 'help')) return io.out(usage('doctor [OPTIONS]', 'Report Docker\'s iptables rules, firewall managers (ufw, firewalld), forward policies, br_netfilter and sysctls, what tsnet did about them, and whether tsnet\'s rules match its records.', specs, 'tsnet doctor'));
      const format = str(p, 'format');
      if (format !== undefined && format !== 'json') throw new TsnetError('INVALID_CONFIG', `format: expected json, got ${JSON.stringify(format)}`, { details: { field: 'format' } });
      const findings = diagnose(await gatherHostFacts(await deps()));
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
