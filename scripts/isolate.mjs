#!/usr/bin/env node
// Runs a command inside a throwaway "host": fresh network, UTS, IPC and PID namespaces and a private mount
// namespace with tmpfs on /run, /tmp and tsnet's/CNI's state directories, and /var/lib and /opt
// behind an overlay whose writes go to a tmpfs. Nothing it does can
// touch the machine's real interfaces, routes, firewall or state. Used by `npm test`,
// `npm run bench` and `npm run demo`:
//   unshare --net --mount --propagation private -- node scripts/isolate.mjs -- CMD ARGS...
// or, simpler, `node scripts/isolate.mjs --enter -- CMD ARGS...`, which re-executes itself under
// unshare. Refuses to run when it is not in a namespace of its own.
//
// A checkout under /tmp or /run (a clone in /tmp, a CI workspace under /run) would vanish under
// those tmpfs mounts, and with it node_modules and the tests: the checkout this script belongs to and
// the working directory, when they live there, are opened before the tmpfs goes on and bind-mounted
// back at their own path from the open descriptor (`mount --no-canonicalize --bind /proc/PID/fd/N`:
// the path itself already shows the new, empty tmpfs). Only those directories come back; the rest
// of /tmp and /run stays hidden.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, statSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const args = process.argv.slice(2);
const enter = args[0] === '--enter';
const sep = args.indexOf('--');
const cmd = sep >= 0 ? args.slice(sep + 1) : [];
if (cmd.length === 0) {
  console.error('usage: isolate.mjs [--enter] -- CMD [ARGS...]');
  process.exit(64);
}

if (enter) {
  if (process.getuid?.() !== 0) {
    console.error('isolate: needs root (network and mount namespaces)');
    process.exit(77);
  }
  const outer = String(statSync('/proc/self/ns/net').ino);
  // A PID namespace of its own too, with tini as its init (it reaps what the shims orphan): when
  // the run ends, or this process dies, the kernel ends everything started inside (--kill-child).
  const tini = ['/usr/bin/tini-static', '/usr/bin/tini'].find((f) => existsSync(f));
  const pidNs = tini === undefined ? [] : ['--pid', '--fork', '--mount-proc', '--kill-child'];
  const init = tini === undefined ? [] : [tini, '-s', '--'];
  if (tini === undefined) console.error('isolate: no tini (Debian package tini): running without a PID namespace of its own');
  const child = spawn('unshare', ['--net', '--mount', '--uts', '--ipc', ...pidNs, '--propagation', 'private', '--', ...init, process.execPath, new URL(import.meta.url).pathname, '--', ...cmd], {
    stdio: 'inherit',
    env: { ...process.env, TSNET_OUTER_NETNS_INO: outer },
  });
  forwardSignals(child);
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + 15 : 1)));
} else {
  // Safety: we must be in a network namespace other than the one we were started from (the
  // machine's): the inode recorded before unshare, else PID 1's, else our parent's.
  const mine = String(statSync('/proc/self/ns/net').ino);
  const outer = process.env.TSNET_OUTER_NETNS_INO ?? inoOf('/proc/1/ns/net') ?? inoOf(`/proc/${process.ppid}/ns/net`);
  if (outer === undefined || mine === outer) {
    console.error('isolate: refusing to run: this process is in the machine\'s network namespace (run under unshare --net --mount)');
    process.exit(98);
  }
  const sh = (file, ...a) => execFileSync(file, a, { stdio: ['ignore', 'ignore', 'inherit'], env: { PATH } });
  sh('mount', '--make-rprivate', '/');
  const hidden = ['/run', '/tmp'];
  const kept = keptDirs(hidden).map((dir) => ({ dir, fd: openSync(dir, 'r') }));
  for (const dir of hidden) sh('mount', '-t', 'tmpfs', '-o', 'mode=0755', 'tsnet-isolated', dir);
  for (const { dir, fd } of kept) {
    mkdirSync(dir, { recursive: true });
    sh('mount', '--no-canonicalize', '--bind', `/proc/${process.pid}/fd/${fd}`, dir);
    closeSync(fd);
  }
  // /var/lib and /opt read through, written to a tmpfs (overlayfs): what dockerd, podman, libcni
  // or a plugin's default directory (/var/lib/cni, /var/lib/containers, /opt/cni/bin) writes
  // never reaches the real disk, even for a directory that does not exist there.
  const overlaid = [];
  for (const dir of ['/var/lib', '/opt']) {
    if (!existsSync(dir)) continue;
    const top = `/run/.tsnet-isolate${dir.replaceAll('/', '-')}`;
    mkdirSync(`${top}/upper`, { recursive: true });
    mkdirSync(`${top}/work`, { recursive: true });
    try {
      sh('mount', '-t', 'overlay', 'tsnet-isolated', '-o', `lowerdir=${dir},upperdir=${top}/upper,workdir=${top}/work`, dir);
      overlaid.push(dir);
    } catch {
      console.error(`isolate: warning: no overlayfs over ${dir}; only existing state directories are hidden`);
    }
  }
  for (const dir of ['/var/lib/tsnet', '/var/lib/cni', '/etc/cni', '/opt/cni']) {
    // Created only inside an overlay (in its tmpfs); never on the real disk.
    if (!existsSync(dir) && overlaid.some((o) => dir.startsWith(`${o}/`))) mkdirSync(dir, { recursive: true });
    if (!existsSync(dir)) continue;
    sh('mount', '-t', 'tmpfs', '-o', 'mode=0755', 'tsnet-isolated', dir);
  }
  mkdirSync('/run/netns', { recursive: true });
  mkdirSync('/run/tsnet', { recursive: true });
  sh('ip', 'link', 'set', 'lo', 'up');
  const child = spawn(cmd[0], cmd.slice(1), {
    stdio: 'inherit',
    env: { ...process.env, TSNET_ISOLATED: '1', TSNET_OUTER_NETNS_INO: outer, TSNET_RUN_DIR: '/run/tsnet', TSNET_STATE_DIR: '/run/tsnet/state' },
  });
  forwardSignals(child);
  child.on('exit', (code, signal) => {
    killLeftovers();
    process.exit(code ?? (signal ? 128 + 15 : 1));
  });
}

/**
 * The checkout of this script and the working directory, when they live under a hidden directory,
 * and the directories TSNET_ISOLATE_KEEP lists (colon-separated): a clone whose node_modules was
 * copied from another checkout under /tmp needs that one too (tap's built plugin loader holds
 * absolute paths into it).
 */
function keptDirs(hidden) {
  const root = fileURLToPath(new URL('..', import.meta.url)).replace(/\/$/, '');
  const under = (p) => hidden.some((h) => p.startsWith(`${h}/`));
  const extra = (process.env.TSNET_ISOLATE_KEEP ?? '').split(':').filter((d) => d.startsWith('/') && existsSync(d)).map((d) => d.replace(/\/$/, ''));
  const dirs = [...new Set([root, process.cwd(), ...extra])].filter(under).sort();
  // A directory inside another kept one comes back with it.
  return dirs.filter((d) => !dirs.some((o) => o !== d && d.startsWith(`${o}/`)));
}

// Everything still running in this throwaway network namespace was started by the command we ran
// (servers, ip processes, the detached shims of containers a failed test did not remove): end it,
// with its process group (a shim's group holds its container), so nothing outlives the run.
function killLeftovers() {
  const mine = readlinkOr(`/proc/self/ns/net`);
  const myPgrp = pgrpOf(process.pid);
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid || readlinkOr(`/proc/${pid}/ns/net`) !== mine) continue;
    const pgrp = pgrpOf(pid);
    try {
      if (pgrp !== undefined && pgrp !== myPgrp && pgrp > 1) process.kill(-pgrp, 'SIGKILL');
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

function readlinkOr(path) {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

/** The process group of `pid` (/proc/PID/stat: "pid (comm) state ppid pgrp ..."). */
function pgrpOf(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return Number(rest[2]);
  } catch {
    return undefined;
  }
}

function inoOf(path) {
  try {
    return String(statSync(path).ino);
  } catch {
    return undefined;
  }
}

function forwardSignals(child) {
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, () => child.kill(s));
}
