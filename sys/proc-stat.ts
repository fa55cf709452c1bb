/** /proc/PID/stat parsing, shared by the runtime's process table and the shim (no heavy imports here). */
import { readFileSync } from 'node:fs';

export interface ProcStat {
  readonly pid: number;
  readonly comm: string;
  readonly state: string;
  readonly ppid: number;
  /** Field 22, clock ticks after boot, kept as text (no precision questions). */
  readonly startTime: string;
}

/** Parses /proc/PID/stat. The command name may hold spaces and parentheses: it ends at the last ')'. */
export function parseProcStat(text: string): ProcStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  const rest = text.slice(close + 2).trim().split(' ');
  const state = rest[0];
  const ppid = Number(rest[1]);
  const startTime = rest[19];
  if (!Number.isInteger(pid) || state === undefined || !Number.isInteger(ppid) || startTime === undefined || !/^\d+$/.test(startTime)) return undefined;
  return { pid, comm: text.slice(open + 1, close), state, ppid, startTime };
}

/**
 * The stat of a process, or undefined if there is no such process. Read synchronously: procfs
 * never waits on a disk, and `ps` checks every running container's process (with 250 containers
 * the promise API's four thread-pool round trips per file were a quarter of its time).
 */
export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}
