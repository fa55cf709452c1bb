/**
 * The client side of the tsnet daemon's control socket (`<runDir>/daemon.sock`, newline-delimited
 * JSON, one request and one reply per connection; the server is engine/daemon.ts). Here in sys/ so
 * that the CLI and the CNI plugins (which may not import cli/) share one implementation.
 */
import net from 'node:net';
import { join } from 'node:path';
import { TsnetError } from '../core/errors.js';

/** The control socket of the daemon of `runDir`. */
export const daemonSocket = (runDir: string): string => join(runDir, 'daemon.sock');

/**
 * Sends `{"op": op, ...extra}` to the daemon listening on `socket` and resolves with its reply, parsed as JSON
 * but not validated (the caller knows the schema); undefined if no daemon listens there (no socket,
 * or a stale one). UNAVAILABLE on no answer within `timeoutMs`, INTERNAL on a reply that is not JSON.
 */
export function daemonCall(socket: string, op: string, timeoutMs: number, extra: Readonly<Record<string, unknown>> = {}): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const conn = net.connect(socket);
    const timer = setTimeout(() => {
      conn.destroy();
      reject(new TsnetError('UNAVAILABLE', `daemon: no answer to ${op} within ${timeoutMs} ms (${socket})`));
    }, timeoutMs);
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(`${JSON.stringify({ ...extra, op })}\n`));
    conn.on('data', (c: string) => {
      buf += c;
    });
    conn.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolve(undefined);
      else reject(new TsnetError('UNAVAILABLE', `daemon: ${op}: ${err.message}`, { cause: err }));
    });
    conn.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buf));
      } catch (err) {
        reject(new TsnetError('INTERNAL', `daemon: bad reply to ${op}: ${JSON.stringify(buf.slice(0, 200))}`, { cause: err }));
      }
    });
  });
}
