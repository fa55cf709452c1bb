/**
 * The systemd unit of `tsnet daemon` (`tsnet daemon --install-unit`), pure: the text from the
 * daemon's command line. On a host with systemd this is the clean way to keep the daemon running
 * (Restart=always); without systemd the CLI starts the daemon under its watchdog (native/watchdog.c).
 *
 * KillMode=process, as containerd's unit has it: containers started through the daemon (its CLI
 * service) have their supervisors in its cgroup, and stopping or restarting the daemon must not kill
 * them; its own helpers (ip, nft monitor) end by themselves when their pipes to it close.
 */

export interface UnitOptions {
  readonly node: string;
  /** dist/tsnet.js */
  readonly entry: string;
  readonly stateDir: string;
  readonly runDir: string;
  readonly firewall: string;
  readonly upstream?: string;
}

export const UNIT_NAME = 'tsnet.service';

/** systemd's quoting of one ExecStart word (only what our paths and values can hold). */
function word(w: string): string {
  if (/^[A-Za-z0-9_./:@=,+-]+$/.test(w)) return w;
  return `"${w.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/%/g, '%%').replace(/\$/g, '$$$$')}"`;
}

export function systemdUnit(o: UnitOptions): string {
  const argv = [o.node, o.entry, '--state-dir', o.stateDir, '--run-dir', o.runDir, '--firewall', o.firewall, '--log-level', 'info', 'daemon', ...(o.upstream !== undefined ? ['--upstream', o.upstream] : [])];
  return [
    '[Unit]',
    'Description=tsnet daemon: embedded DNS, firewall watcher, CNI and CLI services',
    'Documentation=https://github.com/tsnet/tsnet#embedded-dns',
    'After=network-online.target nftables.service firewalld.service docker.service',
    'Wants=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    `ExecStart=${argv.map(word).join(' ')}`,
    'Environment=NODE_EXTRA_CA_CERTS=',
    'Restart=always',
    'RestartSec=1',
    'KillMode=process',
    'OOMScoreAdjust=-500',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}
