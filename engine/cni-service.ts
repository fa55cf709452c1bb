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
import { join } from 'node:path';
import type { Logger } from '../core/log.js';
import type { Controller } from '../cnm/controller.js';
import type { NetlinkFor } from '../sys/netlink/api.js';
import { createIproute2NetlinkFor } from '../sys/netlink/iproute2.js';
import { listenRequests, type UnixServer } from '../sys/unix-socket.js';
import { buildDeps, serveRequest } from '../plugins/cni/main.js';
import type { DaemonService } from '../sys/api.js';

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
  /** The daemon's controller: configurations with `tsnetNetwork` join its networks (plugins/cni/attach.ts). */
  readonly controller?: () => Promise<Controller>;
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
  let server: UnixServer | undefined;
  let inFlight = 0;
  const st = { requests: 0, failed: 0, refused: 0 };

  async function run(req: ParsedCniRequest): Promise<{ code: number; stdout: string }> {
    // Container namespaces: handles of this request only, closed with it (an ip process must not
    // outlive the request, nor keep a deleted namespace alive).
    const own = createIproute2NetlinkFor({ log });
    const netlink: NetlinkFor = (ns) => (ns.kind === 'host' ? hostNetlink(ns) : own(ns));
    try {
      return await serveRequest(req.plugin, req.env, req.stdin, () => buildDeps({ log, netlink, stateDir: o.stateDir, runDir: o.runDir, ...(o.controller !== undefined ? { controller: o.controller } : {}) }));
    } finally {
      await own.closeAll().catch((err: unknown) => log.warn('closing ip processes failed', { err: err instanceof Error ? err.message : String(err) }));
    }
  }

  /** One request from the front end → its reply (`CODE "\n" STDOUT`). */
  function serve(raw: Buffer): Promise<string> {
    const reply = (code: number, stdout: string): string => `${code}\n${stdout}`;
    const req = parseCniRequest(raw);
    if (req === undefined) {
      st.failed++;
      return Promise.resolve(reply(1, `${JSON.stringify({ cniVersion: '1.1.0', code: 6, msg: 'decoding failure', details: 'tsnet daemon: malformed request from the CNI front end' })}\n`));
    }
    if (inFlight >= maxInFlight && waiting.length >= maxQueued) {
      st.refused++;
      return Promise.resolve(reply(1, `${JSON.stringify({ cniVersion: '1.1.0', code: 11, msg: 'try again later', details: `tsnet daemon: ${maxInFlight} CNI requests in flight and ${maxQueued} waiting` })}\n`));
    }
    st.requests++;
    const t0 = performance.now();
    const slot = inFlight < maxInFlight ? Promise.resolve() : new Promise<void>((r) => waiting.push(r));
    inFlight++; // counts the waiting ones too: a slot is handed over, never freed and retaken
    return slot
      .then(() => run(req))
      .then(
        (r) => {
          if (r.code !== 0) st.failed++;
          log.debug('cni request', { plugin: req.plugin, verb: req.env['CNI_COMMAND'], container: req.env['CNI_CONTAINERID'], code: r.code, ms: Math.round((performance.now() - t0) * 10) / 10 });
          return reply(r.code, r.stdout);
        },
        (err: unknown) => {
          st.failed++;
          const msg = err instanceof Error ? err.message : String(err);
          log.warn('cni request failed', { err: msg });
          return reply(1, `${JSON.stringify({ cniVersion: '1.1.0', code: 999, msg: 'internal error', details: msg })}\n`);
        },
      )
      .finally(() => {
        inFlight--;
        waiting.shift()?.();
      });
  }

  return {
    name: 'cni',
    async start() {
      // The daemon holds its lock: a socket left here is stale. Root-only (0600). Half-open: the
      // client ends its side after the request and reads the reply afterwards.
      server = await listenRequests(path, serve, { mode: 0o600, maxRequest: MAX_REQUEST });
      log.info('serving the CNI plugins', { socket: path });
    },
    reload: () => Promise.resolve(),
    async stop() {
      const srv = server;
      server = undefined;
      await srv?.close();
      await hostNetlink.closeAll();
    },
    status: () => ({ socket: path, running: Math.min(inFlight, maxInFlight), waiting: waiting.length, ...st }),
  };
}
