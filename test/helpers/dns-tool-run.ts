/**
 * test/helpers/dns-tool.ts as a program to run inside namespaces: bundled once per process (plain
 * node starts in ~50 ms; through tsx a call took ~1 s), removed by the caller's teardown.
 */
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { NetnsRef } from '../../core/net.js';
import { inNetns, run } from '../../sys/exec.js';
import type { DnsQuestion, DnsResult } from './dns-client.js';

/** Bundles the tool to `outfile`; returns that path. */
export async function buildDnsTool(outfile: string): Promise<string> {
  await build({
    entryPoints: [fileURLToPath(new URL('./dns-tool.ts', import.meta.url))], outfile, bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'warning',
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
  });
  return outfile;
}

/** The tool bundled under /tmp for a test file: its path, `ask` (queries sent from inside `ns`, one process for the batch) and `remove`. */
export async function dnsTool(label: string): Promise<{ readonly path: string; ask(ns: NetnsRef, server: string, queries: DnsQuestion[], timeoutMs?: number): Promise<DnsResult[]>; remove(): Promise<void> }> {
  const path = await buildDnsTool(`/tmp/${label}-${process.pid}.mjs`);
  return {
    path,
    async ask(ns, server, queries, timeoutMs = 3000) {
      const { stdout } = await run(inNetns(ns, [process.execPath, path, 'query', JSON.stringify({ server, port: 53, timeoutMs, queries })]), { timeoutMs: 60_000 });
      return JSON.parse(stdout) as DnsResult[];
    },
    remove: () => rm(path, { force: true }),
  };
}
