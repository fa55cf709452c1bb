/**
 * What the CNI plugins need from outside, built by the composition root (plugins/cni/main.ts) and
 * faked in tests. Nothing here runs code.
 */
import type { Logger } from '../../core/log.js';
import type { NetnsRef } from '../../core/net.js';
import type { Firewall } from '../../sys/firewall/api.js';
import type { NetlinkFor, SysctlFor } from '../../sys/netlink/api.js';
import type { CniDnsRegistry } from '../../sys/store/api.js';
import type { HostLocalStore } from '../../sys/store/api.js';
import type { TcFor } from '../../sys/api.js';
import type { Controller } from '../../cnm/controller.js';

export interface CniDeps {
  /** The namespace the plugin runs in (the runtime's "host"). */
  readonly hostNs: NetnsRef;
  readonly netlink: NetlinkFor;
  readonly sysctl: SysctlFor;
  /** Traffic shaping (the `bandwidth` capability). */
  readonly tc: TcFor;
  /** The firewall of a backend named in the configuration (`firewallBackend`); INVALID_CONFIG naming
   *  that field for an unknown name. */
  readonly firewall: (backend: string) => Firewall;
  readonly log: Logger;
  readonly randomHex: (bytes: number) => string;
  /** The host-local store of `network` under `dataDir` (default /var/lib/cni/networks). */
  openIpamStore(dataDir: string | undefined, network: string): Promise<HostLocalStore>;
  /** Runs `fn` holding a cross-process lock (kernel-released) named `name`. */
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** Is a process with this pid alive? (GC: temp files whose writer is gone are stale.) */
  isAlive(pid: number): boolean;
  /** Is `path` a live network namespace? */
  isNetns(path: string): Promise<boolean>;
  /**
   * Executes the plugin binary `type` found on `path` with the CNI environment `env` (CNI_COMMAND
   * overridden by `verb`) and `stdin`; resolves with its parsed stdout (undefined when empty), or
   * rejects with a CniError carrying the plugin's own code and message.
   */
  execPlugin(type: string, verb: string, path: readonly string[], env: Readonly<Record<string, string>>, stdin: string): Promise<unknown>;
  /** tsnet's DNS registry of CNI attachments (`aliases`, plugins/cni/dns.ts); directories default to tsnet's. */
  dnsRegistry(dirs: { readonly stateDir: string | undefined; readonly runDir: string | undefined }): CniDnsRegistry;
  /** The node daemon's controller (`tsnetNetwork`, plugins/cni/attach.ts); absent in a standalone plugin process. */
  readonly controller?: () => Promise<Controller>;
}

