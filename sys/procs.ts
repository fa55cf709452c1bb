/**
 * The host's process table (/proc, kill(2)) and the lookup of host tools on a search path: the
 * runtime's host ports, built by composition roots.
 */
import { access, constants, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TsnetError } from '../core/errors.js';
import type { ProcessTable } from './api.js';
import { readProcStat } from './proc-stat.js';

export function hostProcessTable(): ProcessTable {
  let boot: Promise<string> | undefined; // fixed until the next boot, which ends this process too
  return {
    async startTime(pid) {
      const st = await readProcStat(pid);
      return st === undefined || st.state === 'Z' || st.state === 'X' ? undefined : st.startTime;
    },
    async kill(pid, signal, opts = {}) {
      if (!Number.isInteger(pid) || pid <= 1) throw new TsnetError('INVALID_CONFIG', `kill: invalid pid ${pid}`);
      try {
        process.kill(opts.group === true ? -pid : pid, signal);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
        throw new TsnetError('INTERNAL', `kill ${pid} ${signal}: ${(err as Error).message}`, { cause: err });
      }
    },
    bootId() {
      boot ??= readFile('/proc/sys/kernel/random/boot_id', 'utf8').then((t) => t.trim());
      return boot;
    },
  };
}

/** Finds each of `tools` on `searchPath` (a PATH-style list); UNAVAILABLE names the missing ones. */
export async function resolveTools<T extends string>(tools: readonly T[], searchPath: string): Promise<Record<T, string>> {
  const dirs = searchPath.split(':').filter((d) => d.startsWith('/'));
  const found: Partial<Record<string, string>> = {};
  const missing: string[] = [];
  for (const tool of tools) {
    let hit: string | undefined;
    for (const d of dirs) {
      const p = join(d, tool);
      if (await access(p, constants.X_OK).then(() => true, () => false)) {
        hit = p;
        break;
      }
    }
    if (hit === undefined) missing.push(tool);
    else found[tool] = hit;
  }
  if (missing.length > 0) {
    throw new TsnetError('UNAVAILABLE', `needs ${missing.join(', ')} (util-linux, coreutils, hostname) on ${searchPath}`, { details: { missing } });
  }
  return found as Record<T, string>;
}
