/**
 * A real firewalld (Debian `firewalld`, nftables backend) inside a test's isolated host, without
 * systemd: its own D-Bus system bus (dbus-daemon on a socket under the host's run directory, never
 * the machine's bus) and a copy of /etc/firewalld as its permanent configuration, so nothing it
 * writes reaches the real disk. Both are stopped by PID at teardown. Talk to it with
 * DBUS_SYSTEM_BUS_ADDRESS = `bus`.
 */
import { access, cp, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execDetails, inNetns, run } from '../../sys/exec.js';
import type { IsolatedHost } from './isolated-host.js';

export interface Firewalld {
  /** The D-Bus address of its bus. */
  readonly bus: string;
  /** `firewall-cmd ARGS` on that bus; resolves with stdout, rejects on failure. */
  cmd(...args: string[]): Promise<string>;
}

export const FIREWALLD = '/usr/sbin/firewalld';
export const firewalldMissing = async (): Promise<string | false> =>
  (await access(FIREWALLD).then(() => true, () => false)) ? false : 'firewalld is not installed (scripts/setup.sh installs it)';

export async function startFirewalld(host: IsolatedHost): Promise<Firewalld> {
  const dir = join(host.runDir, 'firewalld');
  await mkdir(dir, { recursive: true });
  await cp('/etc/firewalld', join(dir, 'etc'), { recursive: true });
  const sock = join(dir, 'system_bus_socket');
  const bus = `unix:path=${sock}`;
  const dbus = host.spawnIn(host.ns, ['dbus-daemon', '--system', '--nofork', '--nopidfile', `--address=${bus}`]);
  // Drained: a full pipe would block the bus (it logs every failed PolicyKit activation).
  dbus.child.stdout.resume();
  dbus.child.stderr.resume();
  for (let i = 0; i < 100 && !(await access(sock).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 50));
  const fwd = host.spawnIn(host.ns, ['env', `DBUS_SYSTEM_BUS_ADDRESS=${bus}`, FIREWALLD, '--nofork', '--nopid', '--system-config', join(dir, 'etc'), '--log-target=console']);
  let log = '';
  fwd.child.stdout.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-20_000)));
  fwd.child.stderr.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-20_000)));
  const cmd = async (...args: string[]): Promise<string> => (await run(inNetns(host.ns, ['firewall-cmd', ...args]), { env: { DBUS_SYSTEM_BUS_ADDRESS: bus }, timeoutMs: 30_000 })).stdout.trim();
  for (let i = 0; ; i++) {
    const state = await cmd('--state').catch((err: unknown) => execDetails(err)?.stdout.trim() ?? '');
    if (state === 'running') break;
    if (i >= 150) throw new Error(`firewalld did not start: ${log.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { bus, cmd };
}
