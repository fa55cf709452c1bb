/**
 * Kernel parameters (/proc/sys) in any network namespace. /proc/sys/net belongs to the network
 * namespace of the process that opens it, so: plain file reads and writes for the process's own
 * namespace (`{kind:'host'}`), and one `nsenter --net=PATH sysctl ...` process per call for a
 * namespace file (all the keys of one `set` in that one process).
 *
 * Keys use sysctl(8)'s dotted form; a '.' inside a segment (an interface `br.5`) is written '/':
 * `net.ipv4.conf.br/5.forwarding`. sysctl(8) is given the unambiguous slash form
 * (`net/ipv4/conf/br.5/forwarding`), which it uses as a path as it is.
 */
import { readFile as fsReadFile, writeFile as fsWriteFile } from 'node:fs/promises';
import { TsnetError, type ErrorCode } from '../core/errors.js';
import { netnsLabel, type NetnsRef } from '../core/net.js';
import { execDetails, inNetns, run, type Argv, type RunOptions, type RunResult } from './exec.js';
import type { Sysctl, SysctlFor } from './netlink/api.js';

const SEGMENT = /^[A-Za-z0-9_@:+-][A-Za-z0-9_.@:+-]*$/;

function invalid(field: string, value: unknown, why: string): TsnetError {
  return new TsnetError('INVALID_CONFIG', `${field}: invalid value ${JSON.stringify(value)}: ${why}`, { details: { field, value } });
}

/** Checks a dotted key ("net.ipv4.conf.br/5.route_localnet") and returns it unchanged. */
export function parseSysctlKey(raw: string, field = 'sysctl key'): string {
  if (typeof raw !== 'string' || raw.length === 0 || raw.length > 255) throw invalid(field, raw, 'must be a dotted sysctl name');
  const segs = raw.split('.').map((s) => s.replaceAll('/', '.'));
  if (segs.length < 2 || !segs.every((s) => SEGMENT.test(s) && s !== '.' && s !== '..')) {
    throw invalid(field, raw, "must be dotted segments of letters, digits, '_', '@', ':', '+', '-' (a '.' inside a segment written '/')");
  }
  return raw;
}

/** The path under /proc/sys of a dotted key: `net/ipv4/conf/br.5/forwarding`. */
export function sysctlPath(key: string): string {
  return parseSysctlKey(key)
    .split('.')
    .map((s) => s.replaceAll('/', '.'))
    .join('/');
}

/** A value to write: one line, no NUL. Numbers are written in decimal. */
export function parseSysctlValue(raw: string | number, key: string): string {
  const v = typeof raw === 'number' ? (Number.isInteger(raw) ? String(raw) : '') : raw;
  if (typeof v !== 'string' || v === '' || /[\n\r\0]/.test(v)) throw invalid(`sysctl ${key}`, raw, 'must be a non-empty one-line value (or an integer)');
  return v;
}

function codeOfErrno(code: string | undefined): ErrorCode {
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return 'NOT_FOUND';
    case 'EINVAL':
    case 'ERANGE':
    case 'EISDIR':
      return 'INVALID_CONFIG';
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return 'UNAVAILABLE';
    default:
      return 'INTERNAL';
  }
}

/** sysctl(8) and nsenter messages → codes. */
export function classifySysctlError(message: string): ErrorCode {
  if (/No such file or directory|cannot stat|unknown key/i.test(message)) return 'NOT_FOUND';
  if (/Invalid argument|Numerical result out of range|Is a directory/i.test(message)) return 'INVALID_CONFIG';
  if (/permission denied|Operation not permitted|Read-only/i.test(message)) return 'UNAVAILABLE';
  return 'INTERNAL';
}

export interface SysctlDeps {
  readonly run?: (argv: Argv, opts?: RunOptions) => Promise<RunResult>;
  readonly readFile?: (path: string) => Promise<string>;
  readonly writeFile?: (path: string, data: string) => Promise<void>;
  /** Where /proc/sys is (tests point it elsewhere). */
  readonly procSys?: string;
}

export function createSysctl(ns: NetnsRef, deps: SysctlDeps = {}): Sysctl {
  const exec = deps.run ?? run;
  const readFile = deps.readFile ?? ((p: string) => fsReadFile(p, 'utf8'));
  const writeFile = deps.writeFile ?? ((p: string, d: string) => fsWriteFile(p, d));
  const procSys = deps.procSys ?? '/proc/sys';
  const label = netnsLabel(ns);

  const fsError = (what: string, key: string, err: unknown): TsnetError => {
    const e = err as NodeJS.ErrnoException;
    return new TsnetError(codeOfErrno(e.code), `sysctl ${what} ${key} (netns ${label}): ${e.message}`, { cause: err, details: { field: key } });
  };
  const execError = (what: string, err: unknown): TsnetError => {
    const stderr = execDetails(err)?.stderr.trim() ?? '';
    if (stderr === '') return err instanceof TsnetError ? err : new TsnetError('INTERNAL', String(err), { cause: err });
    const lines = stderr.split('\n').filter(Boolean);
    // The most specific line decides: a missing key beats a generic failure.
    const code = lines.map(classifySysctlError).find((c) => c !== 'INTERNAL') ?? 'INTERNAL';
    return new TsnetError(code, `sysctl ${what} (netns ${label}): ${lines.join('; ')}`, { cause: err, details: { netns: label, stderr } });
  };

  return {
    ns,
    async get(key) {
      const path = sysctlPath(key);
      if (ns.kind === 'host') {
        try {
          return (await readFile(`${procSys}/${path}`)).trim();
        } catch (err) {
          throw fsError('get', key, err);
        }
      }
      try {
        const { stdout } = await exec(inNetns(ns, ['sysctl', '-n', path]));
        return stdout.trim();
      } catch (err) {
        throw execError(`get ${key}`, err);
      }
    },
    async set(values) {
      if (typeof values !== 'object' || values === null) throw invalid('sysctl values', values, 'must be an object');
      // Validate everything before writing anything.
      const entries = Object.entries(values).map(([k, v]) => [sysctlPath(k), parseSysctlValue(v, k), k] as const);
      if (entries.length === 0) return;
      if (ns.kind === 'host') {
        let first: TsnetError | undefined;
        for (const [path, value, key] of entries) {
          try {
            await writeFile(`${procSys}/${path}`, value);
          } catch (err) {
            first ??= fsError('set', key, err);
          }
        }
        if (first) throw first;
        return;
      }
      // sysctl(8) tries every key and exits non-zero if one failed; stderr names the failures.
      try {
        await exec(inNetns(ns, ['sysctl', '-q', '-w', ...entries.map(([path, value]) => `${path}=${value}`)]));
      } catch (err) {
        throw execError(`set ${entries.map(([, , k]) => k).join(' ')}`, err);
      }
    },
  };
}

export function createSysctlFor(deps: SysctlDeps = {}): SysctlFor {
  return (ns) => createSysctl(ns, deps);
}
