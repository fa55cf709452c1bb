/**
 * Docker's views of published ports (`inspect`'s NetworkSettings.Ports, `tsnet port`); the `-p` and
 * `--expose` parsers live in cnm/publish-spec.ts (the lab file's `ports` use them too).
 */
import type { Proto } from '../core/net.js';

export { parseExpose, parsePublish, type PublishSpec } from '../cnm/publish-spec.js';

interface MappingView {
  readonly proto: Proto;
  readonly hostIp?: string | undefined;
  readonly containerIp: string;
  readonly hostPort: { readonly start: number; readonly end: number };
  readonly containerPort: { readonly start: number; readonly end: number };
}

/**
 * Docker's NetworkSettings.Ports: one key per container port ("80/tcp"), each with its host
 * bindings; a mapping without host address shows the unspecified address of its family.
 */
export function portBindings(mappings: readonly MappingView[]): Record<string, { HostIp: string; HostPort: string }[]> {
  const out: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const m of mappings) {
    const HostIp = m.hostIp ?? (m.containerIp.includes(':') ? '::' : '0.0.0.0');
    const n = m.containerPort.end - m.containerPort.start;
    for (let i = 0; i <= n; i++) {
      // N host ports onto one container port: the host range, as Docker shows a range.
      const HostPort = n === 0 && m.hostPort.end !== m.hostPort.start ? `${m.hostPort.start}-${m.hostPort.end}` : String(m.hostPort.start + i);
      (out[`${m.containerPort.start + i}/${m.proto}`] ??= []).push({ HostIp, HostPort });
    }
  }
  return out;
}

/** `docker port` lines: "80/tcp -> 0.0.0.0:8080", or with a PORT[/PROTO] filter just "0.0.0.0:8080". */
export function portLines(bindings: Record<string, { HostIp: string; HostPort: string }[]>, filter?: string): string[] {
  const key = filter === undefined ? undefined : filter.includes('/') ? filter : `${filter}/tcp`;
  const addr = (b: { HostIp: string; HostPort: string }): string => `${b.HostIp.includes(':') ? `[${b.HostIp}]` : b.HostIp}:${b.HostPort}`;
  const keys = Object.keys(bindings).sort((a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10) || a.localeCompare(b));
  if (key !== undefined) return (bindings[key] ?? []).map(addr);
  return keys.flatMap((k) => (bindings[k] ?? []).map((b) => `${k} -> ${addr(b)}`));
}
