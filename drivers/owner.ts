/**
 * Who made a kernel object: tsnet writes an OWNER TAG as the interface alias (ifalias) of every
 * bridge and host-side interface it creates, and deletes only what carries its own tag. So a
 * rollback or a `network rm` never deletes a user's interface (an existing veth, `lo`, a bridge the
 * user made and named), and two state directories on one host never tear down each other's
 * objects: a name that belongs to another store is refused, by name, with that store's place.
 *
 *   tsnet:<scope>:<network>[:<where>]
 *
 * `scope` is the owner of a family of networks: a store's engine id (16 hex digits) for the CNM
 * doors, `cni` for CNI networks (named by their configuration). `network` identifies the network
 * inside the scope (12 hex digits of a CNM id; a CNI network's firewall id). `where` (optional) is
 * the store's state directory, for messages. An alias carries at most 255 characters of
 * [A-Za-z0-9_.:/@+=-] (what an `ip -batch` line can hold).
 */
import type { Link } from '../sys/netlink/api.js';

const ALIAS_CHARS = /^[A-Za-z0-9_.:/@+=-]+$/;

export interface OwnerTag {
  readonly scope: string;
  readonly network: string;
  readonly where?: string;
}

export function formatOwnerTag(o: OwnerTag): string {
  const base = `tsnet:${o.scope}:${o.network}`;
  const where = o.where !== undefined && ALIAS_CHARS.test(o.where) && base.length + 1 + o.where.length <= 255 ? `:${o.where}` : '';
  return `${base}${where}`;
}

export function parseOwnerTag(alias: string | undefined): OwnerTag | undefined {
  if (alias === undefined || !alias.startsWith('tsnet:')) return undefined;
  const [, scope, network, ...rest] = alias.split(':');
  if (scope === undefined || scope === '' || network === undefined || network === '') return undefined;
  const where = rest.join(':');
  return { scope, network, ...(where !== '' ? { where } : {}) };
}

/**
 * How an existing link relates to `owner`: made for this very network ('ours'), for another network
 * of the same scope ('sibling'), by another tsnet store ('other-store'), or not by tsnet ('foreign').
 */
export function ownership(link: Pick<Link, 'alias'>, owner: OwnerTag): 'ours' | 'sibling' | 'other-store' | 'foreign' {
  const t = parseOwnerTag(link.alias);
  if (t === undefined) return 'foreign';
  if (t.scope !== owner.scope) return 'other-store';
  return t.network === owner.network ? 'ours' : 'sibling';
}

/** "the store at /var/lib/tsnet" or "another tsnet store (engine 1a2b...)". */
export function describeOwner(alias: string | undefined): string {
  const t = parseOwnerTag(alias);
  if (t === undefined) return 'someone else';
  if (t.scope === 'cni') return `CNI network ${t.network}`;
  return t.where !== undefined ? `the store at ${t.where}` : `another tsnet store (engine ${t.scope})`;
}
