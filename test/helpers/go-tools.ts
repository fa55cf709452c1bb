/**
 * The Go programs of test/helpers/go/ (a go-cni driver doing what containerd's CRI plugin does, a
 * libcni cnitool, Go's JSON decoder over plugin structs), built offline from Debian's packages:
 * golang-go, golang-github-containerd-go-cni-dev, golang-github-appc-cni-dev (scripts/setup.sh).
 *
 * Built once into a cache directory under the temporary directory, keyed by the sources and the
 * toolchain (under scripts/isolate.mjs /tmp is a tmpfs: once per test run), in GOPATH mode: each
 * program copied to <cache>/gopath/src/tsnet-test/NAME, GO111MODULE=off,
 * GOPATH=<cache>/gopath:/usr/share/gocode, GOCACHE and HOME under the cache, GOFLAGS empty,
 * GOENV=off, GOPROXY=off: nothing from the user's environment, no network. ~5 s cold on the
 * reference machine. Concurrent test files serialize on a lock file (flock(1), released by the
 * kernel) and the second one finds Go's build cache warm. Static binaries (CGO_ENABLED=0).
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NetnsRef } from '../../core/net.js';
import { execDetails, inNetns, run, type Argv } from '../../sys/exec.js';

export const GO_PROGRAMS = ['gocni', 'cnitool', 'gojson'] as const;
export type GoProgram = (typeof GO_PROGRAMS)[number];
export type GoTools = Readonly<Record<GoProgram, string>>;

const SRC = fileURLToPath(new URL('./go/', import.meta.url));
const GOCODE = '/usr/share/gocode';
const PACKAGES = [`${GOCODE}/src/github.com/containerd/go-cni`, `${GOCODE}/src/github.com/containernetworking/cni/libcni`];
export const GO_PACKAGES_HINT = 'golang-go, golang-github-containerd-go-cni-dev and golang-github-appc-cni-dev (scripts/setup.sh installs them)';

/** Why the programs cannot be built here, or undefined when they can. */
export async function goToolsMissing(): Promise<string | undefined> {
  const version = await run(['go', 'version']).then((r) => r.stdout.trim(), () => undefined);
  if (version === undefined) return `no Go toolchain: install ${GO_PACKAGES_HINT}`;
  for (const p of PACKAGES) if (!(await stat(p).then((s) => s.isDirectory(), () => false))) return `${p} missing: install ${GO_PACKAGES_HINT}`;
  return undefined;
}

async function cacheKey(goVersion: string): Promise<string> {
  const h = createHash('sha256').update(goVersion);
  for (const p of GO_PROGRAMS) h.update(p).update(await readFile(join(SRC, p, 'main.go')));
  for (const p of PACKAGES) h.update(String((await stat(p)).mtimeMs));
  return h.digest('hex').slice(0, 16);
}

/** Builds (or finds built) every program; rejects naming the packages when the toolchain is missing. */
export async function goTools(): Promise<GoTools> {
  const missing = await goToolsMissing();
  if (missing !== undefined) throw new Error(`cannot build the Go test programs: ${missing}`);
  const goVersion = (await run(['go', 'version'])).stdout.trim();
  const dir = join(tmpdir(), `tsnet-go-${await cacheKey(goVersion)}`);
  const tools = Object.fromEntries(GO_PROGRAMS.map((p) => [p, join(dir, p)])) as Record<GoProgram, string>;
  const built = async (): Promise<boolean> => (await Promise.all(GO_PROGRAMS.map((p) => stat(tools[p]).then(() => true, () => false)))).every(Boolean);
  if (await built()) return tools;
  const src = join(dir, 'gopath', 'src', 'tsnet-test');
  for (const p of GO_PROGRAMS) {
    await mkdir(join(src, p), { recursive: true });
    await copyFile(join(SRC, p, 'main.go'), join(src, p, 'main.go'));
  }
  const out = join(dir, `out-${process.pid}`);
  await mkdir(out, { recursive: true });
  try {
    const env = {
      HOME: dir,
      GOPATH: `${join(dir, 'gopath')}:${GOCODE}`,
      GO111MODULE: 'off',
      GOCACHE: join(dir, 'gocache'),
      GOENV: 'off',
      GOFLAGS: '',
      GOPROXY: 'off',
      GOTOOLCHAIN: 'local',
      CGO_ENABLED: '0',
    };
    const pkgs = GO_PROGRAMS.map((p) => `tsnet-test/${p}`);
    await run(['flock', join(dir, 'lock'), 'go', 'build', '-o', `${out}/`, ...pkgs], { env, timeoutMs: 300_000 });
    for (const p of GO_PROGRAMS) await rename(join(out, p), tools[p]);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
  return tools;
}

// ---------------------------------------------------------------------------------------------
// Driving CNI plugins through them, in a test's isolated host.

/** The part of a Kubernetes pod sandbox the network setup reads (CRI PodSandboxConfig). */
export interface Pod {
  readonly id: string;
  readonly netns: string;
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  readonly portMappings?: readonly { readonly protocol: 'TCP' | 'UDP' | 'SCTP'; readonly containerPort: number; readonly hostPort: number; readonly hostIp?: string }[];
  /** bit/s, as the kubernetes.io/ingress-bandwidth and egress-bandwidth annotations give them. */
  readonly ingressBandwidth?: number;
  readonly egressBandwidth?: number;
  readonly dns?: { readonly servers: readonly string[]; readonly searches: readonly string[]; readonly options: readonly string[] };
}

/** What a runtime learns from an ADD, whichever driver ran it. */
export interface Attached {
  /** The pod's first address on eth0. */
  readonly ip: string;
  /** Host-side interfaces the plugins report (veth ends, bridges, ifb devices). */
  readonly hostInterfaces: readonly string[];
  /** Every non-empty `dns` of the results. */
  readonly dns: readonly Record<string, unknown>[];
  readonly raw: unknown;
}

export interface CniDriver {
  readonly label: string;
  setup(pod: Pod): Promise<Attached>;
  check(pod: Pod): Promise<void>;
  remove(pod: Pod): Promise<void>;
}

const CRI_ANNOTATIONS = 'io.kubernetes.cri.pod-annotations';
const annotations = (pod: Pod): Record<string, string> => ({
  ...(pod.ingressBandwidth !== undefined ? { 'kubernetes.io/ingress-bandwidth': String(pod.ingressBandwidth) } : {}),
  ...(pod.egressBandwidth !== undefined ? { 'kubernetes.io/egress-bandwidth': String(pod.egressBandwidth) } : {}),
});
const nonEmpty = (d: unknown): d is Record<string, unknown> => typeof d === 'object' && d !== null && Object.values(d).some((v) => v !== undefined && v !== null && v !== '' && !(Array.isArray(v) && v.length === 0));

async function runDriver(ns: NetnsRef, argv: Argv, opts: { readonly input?: string; readonly env?: Record<string, string> }): Promise<string> {
  try {
    return (await run(inNetns(ns, argv), { ...opts, timeoutMs: 120_000 })).stdout;
  } catch (err) {
    const d = execDetails(err);
    throw new Error(`${argv[0].split('/').pop() ?? ''} ${argv.slice(1).join(' ')}: exit ${String(d?.exitCode)}: ${(d?.stderr ?? String(err)).trim()}`);
  }
}

/**
 * containerd 1.6's CRI path: go-cni with the CRI plugin's options (loopback network, the first
 * configuration of `confDir`, K8S_* labels, portMappings/bandwidth/dns capabilities).
 */
export function goCniDriver(tools: GoTools, ns: NetnsRef, o: { readonly confDir: string; readonly pluginDirs: readonly string[]; readonly prefix?: readonly string[] }): CniDriver {
  const call = (verb: string, pod: Pod): Promise<string> => {
    const input = JSON.stringify({
      id: pod.id, netns: pod.netns, metadata: { name: pod.name, namespace: pod.namespace, uid: pod.uid },
      portMappings: pod.portMappings ?? [], annotations: annotations(pod),
      ...(pod.dns ? { dnsConfig: pod.dns } : {}),
    });
    return runDriver(ns, [...(o.prefix ?? []), tools.gocni, '-verb', verb, '-conf-dir', o.confDir, '-plugin-dirs', o.pluginDirs.join(':')] as unknown as Argv, { input });
  };
  return {
    label: 'go-cni',
    async setup(pod) {
      const r = JSON.parse(await call('setup', pod)) as { Interfaces: Record<string, { IPConfigs: { IP: string }[] | null; Sandbox: string }>; DNS: unknown[] };
      const ip = r.Interfaces['eth0']?.IPConfigs?.[0]?.IP;
      if (ip === undefined) throw new Error(`go-cni result without an eth0 address: ${JSON.stringify(r)}`);
      return { ip, hostInterfaces: Object.entries(r.Interfaces).filter(([, c]) => c.Sandbox === '').map(([n]) => n), dns: r.DNS.filter(nonEmpty), raw: r };
    },
    check: async (pod) => void (await call('check', pod)),
    remove: async (pod) => void (await call('remove', pod)),
  };
}

/** libcni through cnitool, given the capability arguments go-cni would build for the pod. */
export function cnitoolDriver(tools: GoTools, ns: NetnsRef, o: { readonly confDir: string; readonly pluginDirs: readonly string[]; readonly network: string; readonly cacheDir: string }): CniDriver {
  const call = (verb: string, pod: Pod): Promise<string> => {
    const caps: Record<string, unknown> = { [CRI_ANNOTATIONS]: annotations(pod) };
    const pm = (pod.portMappings ?? []).filter((m) => m.hostPort > 0).map((m) => ({ HostPort: m.hostPort, ContainerPort: m.containerPort, Protocol: m.protocol.toLowerCase(), HostIP: m.hostIp ?? '' }));
    if (pm.length > 0) caps['portMappings'] = pm;
    if (pod.ingressBandwidth !== undefined || pod.egressBandwidth !== undefined) {
      caps['bandwidth'] = {
        IngressRate: pod.ingressBandwidth ?? 0, IngressBurst: pod.ingressBandwidth !== undefined ? 4_294_967_295 : 0,
        EgressRate: pod.egressBandwidth ?? 0, EgressBurst: pod.egressBandwidth !== undefined ? 4_294_967_295 : 0,
      };
    }
    if (pod.dns) caps['dns'] = { Servers: pod.dns.servers, Searches: pod.dns.searches, Options: pod.dns.options };
    const env = {
      NETCONFPATH: o.confDir, CNI_PATH: o.pluginDirs.join(':'), CNI_CACHE_DIR: o.cacheDir, CNI_CONTAINERID: pod.id, CNI_IFNAME: 'eth0',
      CNI_ARGS: `K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=${pod.id};K8S_POD_UID=${pod.uid};IgnoreUnknown=1`,
      CAP_ARGS: JSON.stringify(caps),
    };
    return runDriver(ns, [tools.cnitool, verb, o.network, pod.netns], { env });
  };
  return {
    label: 'libcni (cnitool)',
    async setup(pod) {
      const r = JSON.parse(await call('add', pod)) as { interfaces?: { name: string; sandbox?: string }[]; ips?: { address: string; interface?: number }[]; dns?: unknown };
      const ifs = r.interfaces ?? [];
      const ip = (r.ips ?? []).find((i) => i.interface !== undefined && ifs[i.interface]?.name === 'eth0')?.address.split('/')[0];
      if (ip === undefined) throw new Error(`cnitool result without an eth0 address: ${JSON.stringify(r)}`);
      return { ip, hostInterfaces: ifs.filter((i) => (i.sandbox ?? '') === '').map((i) => i.name), dns: [r.dns].filter(nonEmpty), raw: r };
    },
    check: async (pod) => void (await call('check', pod)),
    remove: async (pod) => void (await call('del', pod)),
  };
}
