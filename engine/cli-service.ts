/**
 * The CLI as a daemon service: the `tsnet` front end (cli/bin/front.c, the installed `tsnet`
 * binary) hands a command to this socket, `<runDir>/cli.sock`, and it runs here, through the very
 * same command code (cli/main.ts, injected as `serve`), with the daemon's warm engine: no Node start,
 * no bundle load, no engine build, no ip process start, no tool lookup per command. What a command
 * prints goes back as frames; its exit code ends the connection.
 *
 * What is served: commands that need nothing of the client's process but its arguments, its
 * environment, its working directory and its signals. A command that reads the client's stdin or
 * terminal (`run -i/-t`, `exec -i/-t`), a client in another network, mount or PID namespace than
 * the daemon's, and a command for another state directory get `local`: the front end then runs the
 * Node CLI itself, exactly as without a daemon. The socket is root-only (0600), as the commands are.
 *
 * Wire (frames of sys/attach.ts's shape: type, three zero bytes, big-endian length, payload):
 *   client → daemon  REQUEST  "tsnet-cli 1" NUL then KEY NUL VALUE NUL pairs: pid, pidns, netns,
 *                             mntns (readlink of /proc/self/ns/*), cwd, env (K=V, repeated), then
 *                             "argv" NUL and the arguments, each NUL-ended
 *                    SIGNAL   a signal's name ("SIGINT"), forwarded to the command (a foreground run)
 *   daemon → client  STDOUT, STDERR  bytes;  EXIT  the exit code in decimal;  LOCAL  run it yourself
 * The client hanging up aborts the command (`signal`): a foreground container is then left to what
 * its --rm and the recorded client (the front end's pid) say, as when a Node client is killed.
 */
import { join } from 'node:path';
import type { Logger } from '../core/log.js';
import type { DaemonService, FramedConnection, UnixServer } from '../sys/api.js';

export const cliSocketPath = (runDir: string): string => join(runDir, 'cli.sock');

export const CLI_FRAME = { stdout: 1, stderr: 2, request: 16, signal: 17, exit: 18, local: 19 } as const;
const MAGIC = 'tsnet-cli 1';
const MAX_FRAME = 4 << 20;
const SIGNALS = new Set(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2']);

export interface CliRequest {
  readonly pid: number;
  readonly namespaces: { readonly pid: string; readonly net: string; readonly mnt: string };
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  readonly argv: readonly string[];
}

/** Parses a request frame (pure); undefined if it is not one. */
export function parseCliRequest(b: Buffer): CliRequest | undefined {
  const parts = b.toString('utf8').split('\0');
  if (parts.pop() !== '' || parts[0] !== MAGIC) return undefined;
  const at = parts.indexOf('argv');
  if (at < 0) return undefined;
  const fields = parts.slice(1, at);
  if (fields.length % 2 !== 0) return undefined;
  const kv = new Map<string, string>();
  const env: Record<string, string> = {};
  for (let i = 0; i < fields.length; i += 2) {
    const k = fields[i] as string;
    const v = fields[i + 1] as string;
    if (k === 'env') {
      const eq = v.indexOf('=');
      if (eq > 0) env[v.slice(0, eq)] = v.slice(eq + 1);
    } else kv.set(k, v);
  }
  const pid = Number(kv.get('pid'));
  const cwd = kv.get('cwd') ?? '';
  const ns = { pid: kv.get('pidns') ?? '', net: kv.get('netns') ?? '', mnt: kv.get('mntns') ?? '' };
  if (!Number.isInteger(pid) || pid <= 0 || !cwd.startsWith('/') || ns.pid === '' || ns.net === '' || ns.mnt === '') return undefined;
  return { pid, namespaces: ns, cwd, env, argv: parts.slice(at + 1) };
}

/** What a served command gets of its client (cli/commands/types.ts Io's served part). */
export interface ServedIo {
  out(text: string | Uint8Array): void;
  err(text: string | Uint8Array): void;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  readonly onSignal: (signals: readonly NodeJS.Signals[], f: (signal: NodeJS.Signals) => void) => () => void;
  /** Aborted when the client hangs up. */
  readonly signal: AbortSignal;
  /** The client process (a foreground container records it as its client). */
  readonly client: { readonly pid: number; readonly startTime: string };
}

export interface CliServiceOptions {
  readonly socket: string;
  readonly log: Logger;
  /** Runs the command; 'local' when it must run in the client's own process. */
  readonly serve: (req: CliRequest, io: ServedIo) => Promise<number | 'local'>;
  /** The daemon's own namespaces (readlink of /proc/self/ns/{pid,net,mnt}). */
  readonly namespaces: () => Promise<CliRequest['namespaces']>;
  /** A process's start time (/proc/PID/stat), undefined if there is none. */
  readonly startTime: (pid: number) => Promise<string | undefined>;
  readonly listen: (path: string, onConnection: (c: FramedConnection) => void, opts: { readonly mode: number; readonly maxFrame: number }) => Promise<UnixServer>;
}

export function createCliService(o: CliServiceOptions): DaemonService {
  const log = o.log.child({ component: 'cli' });
  let server: UnixServer | undefined;
  let mine: CliRequest['namespaces'] | undefined;
  const st = { commands: 0, local: 0, failed: 0, running: 0 };

  async function handle(c: FramedConnection, raw: Buffer): Promise<void> {
    const req = parseCliRequest(raw);
    const same = req !== undefined && mine !== undefined && req.namespaces.pid === mine.pid && req.namespaces.net === mine.net && req.namespaces.mnt === mine.mnt;
    const startTime = same ? await o.startTime(req.pid) : undefined;
    if (req === undefined || !same || startTime === undefined) {
      st.local++;
      c.send(CLI_FRAME.local);
      c.end();
      return;
    }
    const ac = new AbortController();
    const handlers = new Set<(s: NodeJS.Signals) => void>();
    c.onClose(() => ac.abort());
    c.onFrame((type, payload) => {
      const sig = payload.toString('latin1');
      if (type === CLI_FRAME.signal && SIGNALS.has(sig)) for (const h of handlers) h(sig as NodeJS.Signals);
    });
    const io: ServedIo = {
      out: (t) => void c.send(CLI_FRAME.stdout, Buffer.from(t)),
      err: (t) => void c.send(CLI_FRAME.stderr, Buffer.from(t)),
      env: req.env,
      cwd: req.cwd,
      onSignal: (_signals, f) => {
        handlers.add(f);
        return () => handlers.delete(f);
      },
      signal: ac.signal,
      client: { pid: req.pid, startTime },
    };
    st.running++;
    const t0 = performance.now();
    try {
      const code = await o.serve(req, io);
      if (code === 'local') {
        st.local++;
        c.send(CLI_FRAME.local);
      } else {
        st.commands++;
        if (code !== 0) st.failed++;
        c.send(CLI_FRAME.exit, Buffer.from(String(code)));
      }
    } catch (err) {
      // `serve` maps a command's failure to its exit code; this is a bug of the service itself.
      st.failed++;
      log.error('served command failed', { argv: req.argv.slice(0, 4), err: err instanceof Error ? err.message : String(err) });
      c.send(CLI_FRAME.stderr, Buffer.from(`Error: tsnet daemon: ${err instanceof Error ? err.message : String(err)}\n`));
      c.send(CLI_FRAME.exit, Buffer.from('1'));
    } finally {
      st.running--;
      c.end();
      log.debug('served', { argv: req.argv.slice(0, 3), ms: Math.round((performance.now() - t0) * 10) / 10 });
    }
  }

  return {
    name: 'cli',
    async start() {
      mine = await o.namespaces();
      server = await o.listen(o.socket, (c) => {
        let first = true;
        c.onFrame((type, payload) => {
          if (!first) return;
          first = false;
          if (type !== CLI_FRAME.request) {
            c.end();
            return;
          }
          void handle(c, payload);
        });
      }, { mode: 0o600, maxFrame: MAX_FRAME });
      log.info('serving the CLI', { socket: o.socket });
    },
    reload: async () => undefined,
    async stop() {
      const srv = server;
      server = undefined;
      await srv?.close();
    },
    status: () => ({ socket: o.socket, ...st }),
  };
}
