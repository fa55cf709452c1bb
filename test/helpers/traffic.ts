/** Real packets between namespaces, through test/helpers/net-tools.mjs started with nsenter. */
import { fileURLToPath } from 'node:url';
import type { NetnsRef } from '../../core/net.js';
import { inNetns, run } from '../../sys/exec.js';
import type { IsolatedHost } from './isolated-host.js';

const TOOLS = fileURLToPath(new URL('./net-tools.mjs', import.meta.url));

/** Starts a TCP or UDP answering server in `ns` and resolves once it listens. */
export async function startServer(host: IsolatedHost, ns: NetnsRef, proto: 'tcp' | 'udp', addr: string, port: number): Promise<void> {
  const p = host.spawnIn(ns, [process.execPath, TOOLS, `${proto}-server`, addr, String(port)]);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`server ${proto} ${addr}:${port} did not start: ${err}`)), 10_000);
    p.child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening')) {
        clearTimeout(timer);
        resolve();
      }
    });
    p.child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    p.child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server ${proto} ${addr}:${port} exited ${String(code)}: ${err}`));
    });
  });
}

/**
 * Tries `f` up to `tries` times, `delayMs` apart, until it resolves; then its value, else
 * "failed: " and the first line of the last error (a string the caller's assertion shows).
 */
export async function retry(f: () => Promise<string>, tries = 30, delayMs = 150): Promise<string> {
  let last: unknown;
  for (let i = 0; i < tries; i++) {
    try {
      return await f();
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, delayMs));
    }
  }
  return `failed: ${String(last).split('\n')[0] ?? ''}`;
}

/** Sends one request from `ns`; resolves with the reply line, rejects on failure or timeout. */
export async function request(ns: NetnsRef, proto: 'tcp' | 'udp', addr: string, port: number, msg = 'ping', timeoutMs = 3000): Promise<string> {
  const { stdout } = await run(inNetns(ns, [process.execPath, TOOLS, `${proto}-client`, addr, String(port), msg, String(timeoutMs)]), { timeoutMs: timeoutMs + 5000 });
  return stdout.trim();
}

/** Resolves true if a request succeeds, false if it fails (for "must not be reachable" checks). */
export async function reachable(ns: NetnsRef, proto: 'tcp' | 'udp', addr: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return request(ns, proto, addr, port, 'probe', timeoutMs).then(() => true, () => false);
}
