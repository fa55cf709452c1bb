/**
 * Real implementations of the runtime's host ports: the process table (/proc, kill(2)) and the
 * lookup of the host tools the runtime runs. Built by composition roots only.
 */
import { access, constants, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TsnetError } from '../core/errors.js';
import type { ProcessTable } from './api.js';
import { readProcStat } from './proc-stat.js';
import { RUNTIME_TOOLS, type RuntimeTools } from './spec.js';

export function hostProcessTable(): ProcessTable {
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
    async bootId() {
      return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
    },
  };
}

/** Finds each runtime tool on `searchPath` (a PATH-style list); UNAVAILABLE names the missing ones. */
export async function resolveTools(searchPath: string): Promise<RuntimeTools> {
  const dirs = searchPath.split(':').filter((d) => d.startsWith('/'));
  const found: Partial<Record<string, string>> = {};
  const missing: string[] = [];
  for (const tool of RUNTIME_TOOLS) {
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
    throw new TsnetError('UNAVAILABLE', `container runtime needs ${missing.join(', ')} (util-linux, coreutils, hostname) on ${searchPath}`, { details: { missing } });
  }
  return found as RuntimeTools;
}
