/**
 * Interactive processes: with a pseudo-terminal (node-pty: Node has no pty of its own; the child
 * becomes a session leader with the pty as its controlling terminal, so Ctrl-C and window sizes
 * work as in a shell) or with pipes. No time limit: they run as long as the user keeps them.
 * node-pty is a native addon, loaded only when a terminal is asked for.
 */
import { constants } from 'node:os';
import type { Argv, InteractiveOptions, InteractiveProcess } from './api.js';
import { SAFE_PATH, spawnLongLived } from './exec.js';

interface PtyModule {
  spawn(file: string, args: string[], opts: { name: string; cols: number; rows: number; env: Record<string, string>; encoding: null; cwd: string }): {
    readonly pid: number;
    onData(f: (d: Buffer | string) => void): void;
    onExit(f: (e: { exitCode: number; signal?: number }) => void): void;
    write(d: Buffer | string): void;
    resize(c: number, r: number): void;
    kill(sig?: string): void;
  };
}

const signalName = (n: number | undefined): string | null => {
  if (n === undefined || n === 0) return null;
  return Object.entries(constants.signals).find(([, v]) => v === n)?.[0] ?? `SIG${n}`;
};

/** EOT (Ctrl-D): how a terminal says "end of input" to the program reading it. */
const EOT = '\x04';

export async function spawnInteractive(argv: Argv, opts: InteractiveOptions): Promise<InteractiveProcess> {
  const [file, ...args] = argv;
  if (opts.tty !== undefined) {
    const pty = (await import('node-pty')) as unknown as PtyModule;
    const p = pty.spawn(file, args, { name: 'xterm', cols: opts.tty.cols, rows: opts.tty.rows, env: { PATH: SAFE_PATH, TERM: 'xterm' }, encoding: null, cwd: '/' });
    const outs: ((s: 'stdout' | 'stderr', d: Buffer) => void)[] = [];
    p.onData((d) => {
      const b = typeof d === 'string' ? Buffer.from(d) : d;
      for (const f of outs) f('stdout', b);
    });
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
      p.onExit((e) => resolve(e.signal ? { code: null, signal: signalName(e.signal) } : { code: e.exitCode, signal: null }));
    });
    return {
      pid: p.pid,
      onOutput: (f) => outs.push(f),
      write: (d) => p.write(d),
      endInput: () => p.write(EOT),
      resize: (c, r) => p.resize(c, r),
      kill: (sig) => p.kill(sig),
      exited,
    };
  }
  const c = spawnLongLived(argv);
  if (!opts.stdin) c.child.stdin.end();
  const outs: ((s: 'stdout' | 'stderr', d: Buffer) => void)[] = [];
  c.child.stdout.on('data', (d: Buffer) => {
    for (const f of outs) f('stdout', d);
  });
  c.child.stderr.on('data', (d: Buffer) => {
    for (const f of outs) f('stderr', d);
  });
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    c.child.once('close', (code, signal) => resolve({ code, signal }));
    c.child.once('error', () => resolve({ code: 127, signal: null }));
  });
  return {
    pid: c.pid,
    onOutput: (f) => outs.push(f),
    write: (d) => {
      if (c.child.stdin.writable) c.child.stdin.write(d);
    },
    endInput: () => c.child.stdin.end(),
    resize: () => undefined,
    kill: (sig) => {
      c.child.kill(sig);
    },
    exited,
  };
}
