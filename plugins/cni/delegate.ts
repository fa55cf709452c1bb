/**
 * Executing another CNI plugin (a delegated IPAM): find the binary on CNI_PATH, run it with the
 * same CNI environment and the whole configuration on stdin, and turn its error object into a
 * CniError carrying the plugin's own code and message.
 */
import { randomBytes } from 'node:crypto';
import type { Run } from '../../sys/api.js';
import { CNI_ERR, CniError } from './errors.js';

export const randomHex = (n: number): string => randomBytes(n).toString('hex');

export interface PluginCall {
  readonly type: string;
  readonly verb: string;
  readonly path: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly stdin: string;
}

/** Resolves with the plugin's parsed stdout (undefined when empty). */
export async function execPlugin(run: Run, findExecutable: (name: string, dirs: readonly string[]) => Promise<string | undefined>, c: PluginCall): Promise<unknown> {
  const bin = await findExecutable(c.type, c.path);
  if (bin === undefined) throw new CniError(CNI_ERR.INVALID_CONFIG, `ipam.type: plugin ${JSON.stringify(c.type)} not found on CNI_PATH (${c.path.join(':')})`, 'failed to find plugin');
  let out: string;
  try {
    out = (await run([bin], { input: c.stdin, env: { ...c.env, CNI_COMMAND: c.verb }, timeoutMs: 60_000 })).stdout;
  } catch (err) {
    const d = (err as { details?: { stdout?: string; stderr?: string } }).details;
    let parsed: { code?: unknown; msg?: unknown; details?: unknown } | undefined;
    try {
      parsed = JSON.parse(d?.stdout?.trim() ?? '') as typeof parsed;
    } catch {
      parsed = undefined;
    }
    if (typeof parsed?.code === 'number') {
      const msg = String(parsed.msg ?? `${c.type} failed`);
      throw new CniError(parsed.code, `${c.type} ${c.verb}: ${msg}${parsed.details ? `: ${String(parsed.details)}` : ''}`, msg);
    }
    throw new CniError(999, `${c.type} ${c.verb} failed: ${d?.stderr?.trim() || (err instanceof Error ? err.message : String(err))}`, `${c.type} failed`);
  }
  return out.trim() === '' ? undefined : JSON.parse(out);
}
