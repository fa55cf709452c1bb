/**
 * The CNI plugins as a daemon service: the C front end of tsnet-bridge/-ipam/-portmap
 * (plugins/cni/bin/client.c) hands each request to this socket, `<runDir>/cni.sock`, and the
 * request runs through the very same plugin code (plugins/cni/main.ts `serveRequest`) as in a
 * standalone plugin process. What a request no longer pays: starting Node, and starting the host
 * namespace's ip process (one long-lived handle, shared); a container namespace still gets its own
 * ip process, ended with the request.
 *
 * Wire format (see client.c): request `"tsnet-cni 1\n" PLUGIN "\n" {NAME=VALUE "\0"}* "\0" STDIN`,
 * ended by the client's shutdown(SHUT_WR); reply `CODE "\n" STDOUT`, then close. The socket is
 * root-only (0600), as the plugins' work is. Requests are bounded in size (1 MiB); at most
 * `maxInFlight` run at once, the next ones wait in order (up to `maxQueued`; beyond: CNI error 11,
 * try again later), as a burst of pod starts must not fail.
 */
import { chmod, rm } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import type { Logger } from '../core/log.js';
import type { NetlinkFor } from '../sys/netlink/api.js';
import { createIproute2NetlinkFor } from '../sys/netlink/iproute2.js';
import { buildDeps, serveRequest } from '../plugins/cni/main.js';
import type { DaemonService } from './daemon.js';

export const cniSocketPath = (runDir: string): string => join(runDir, 'cni.sock');

const MAGIC = 'tsnet-cni 1\n';
const MAX_REQUEST = 1 << 20;

export interface ParsedCniRequest {
  readonly plugin: string;
  readonly env: Readonly<Record<string, string>>;
  readonly stdin: string;
}

/** Parses one request (pure); undefined if it is not one. */
export function parseCniRequest(b: Buffer): ParsedCniRequest | undefined {
  if (b.length < MAGIC.length || b.toString('latin1', 0, MAGIC.length) !== MAGIC) return undefined;
  const nl = b.indexOf(0x0a, MAGIC.length);
  if (nl < 0) return undefined;
  const plugin = b.toString('utf8', MAGIC.length, nl);
  const env: Record<string, string> = {};
  let at = nl + 1;
  for (;;) {
    const end = b.indexOf(0, at);
    if (end < 0) return undefined;
    if (end === at) {
      at = end + 1;
      break;
    }
    const kv = b.toString('utf8', at, end);
    const eq = kv.indexOf('=');
    if (eq <= 0) return undefined;
    const k = kv.slice(0, eq);
    if (!k.startsWith('CNI_') && !k.startsWith('TSNET_CNI_')) return undefined;
    env[k] = kv.slice(eq + 1);
    at = end + 1;
  }
  return { plugin, env, stdin: b.toString('utf8', at) };
}

export interface CniServiceOptions {
  /** The daemon's directories: the CNI DNS registry's defaults (records under stateDir, reload through runDir's socket). */
  readonly stateDir: string;
  readonly runDir: string;
  readonly log: Logger;
  /** Requests served at once at most (default 32). */
  readonly maxInFlight?: number;
  /** Requests waiting for a slot at most (default 4096). */
  readonly maxQueued?: number;
}

export function createCniService(o: CniServiceOptions): DaemonService {
  const log = o.log.child({ component: 'cni' });
  const path = cniSocketPath(o.runDir);
  const maxInFlight = o.maxInFlight ?? 32;
  const maxQueued = o.maxQueued ?? 4096;
  const waiting: (() => void)[] = [];
  const hostNetlink = createIproute2NetlinkFor({ log });
  let server: net.Server | undefined;
  let inFlight = 0;
  const st = { requests: 0, failed: 0, refused: 0 };

  async function run(req: ParsedCniRequest): Promise<{ code: number; stdout: string }> {
    // Container namespaces: handles of this request only, closed with it (an ip process must not
    // outlive the request, nor keep a deleted namespace alive).
    const own = createIproute2NetlinkFor({ log });
    const netlink: NetlinkFor = (ns) => (ns.kind === 'host' ? hostNetlink(ns) : own(ns));
    try {
      return await serveRequest(req.plugin, req.env, req.stdin, () => buildDeps({ log, netlink, stateDir: o.stateDir, runDir: o.runDir }));
    } finally {
      await own.closeAll().catch((err: unknown) => log.warn('closing ip processes failed', { err: err instanceof Error ? err.message : String(err) }));
    }
  }

  function serve(conn: net.Socket): void {
    const chunks: Buffer[] = [];
    let size = 0;
    conn.on('error', () => undefined);
    conn.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_REQUEST) {
        conn.destroy();
        return;
      }
      chunks.push(c);
    });
    conn.on('end', () => {
      const req = parseCniRequest(Buffer.concat(chunks));
      const reply = (code: number, stdout: string): void => {
        if (!conn.destroyed) conn.end(`${code}\n${stdout}`);
      };
      if (req === undefined) {
        st.failed++;
        reply(1, `${JSON.stringify({ cniVersion: '1.1.0', code: 6, msg: 'decoding failure', details: 'tsnet daemon: malformed request from the CNI front end' })}\n`);
        return;
      }
      if (inFlight >= maxInFlight && waiting.length >= maxQueued) {
        st.refused++;
        reply(1, `${JSON.stringify({ cniVersion: '1.1.0', code: 11, msg: 'try again later', details: `tsnet daemon: ${maxInFlight} CNI requests in flight and ${maxQueued} waiting` })}\n`);
        return;
      }
      st.requests++;
      const t0 = performance.now();
      const slot = inFlight < maxInFlight ? Promise.resolve() : new Promise<void>((r) => waiting.push(r));
      inFlight++; // counts the waiting ones too: a slot is handed over, never freed and retaken
      slot
        .then(() => run(req))
        .then(
          (r) => {
            if (r.code !== 0) st.failed++;
            log.debug('cni request', { plugin: req.plugin, verb: req.env['CNI_COMMAND'], container: req.env['CNI_CONTAINERID'], code: r.code, ms: Math.round((performance.now() - t0) * 10) / 10 });
            reply(r.code, r.stdout);
          },
          (err: unknown) => {
            st.failed++;
            const msg = err instanceof Error ? err.message : String(err);
            log.warn('cni request failed', { err: msg });
            reply(1, `${JSON.stringify({ cniVersion: '1.1.0', code: 999, msg: 'internal error', details: msg })}\n`);
          },
        )
        .finally(() => {
          inFlight--;
          waiting.shift()?.();
        });
    });
  }

  return {
    name: 'cni',
    async start() {
      await rm(path, { force: true }); // the daemon holds its lock: a socket left here is stale
      // Half-open: the client ends its side after the request and reads the reply afterwards.
      const srv = net.createServer({ allowHalfOpen: true }, serve);
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(path, () => {
          srv.off('error', reject);
          resolve();
        });
      });
      await chmod(path, 0o600);
      server = srv;
      log.info('serving the CNI plugins', { socket: path });
    },
    reload: () => Promise.resolve(),
    async stop() {
      const srv = server;
      server = undefined;
      if (srv) await new Promise<void>((r) => srv.close(() => r()));
      await rm(path, { force: true });
      await hostNetlink.closeAll();
    },
    status: () => ({ socket: path, running: Math.min(inFlight, maxInFlight), waiting: waiting.length, ...st }),
  };
}
