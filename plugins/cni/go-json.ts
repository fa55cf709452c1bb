/**
 * Reading JSON objects as a Go plugin's struct would see them: the one place where tsnet's CNI
 * plugins look up a key of a configuration or capability object. Pure.
 *
 * Why: the CNI peers are Go programs. containerd's go-cni serializes its capability structs with
 * their Go field names (`{"HostPort":8080,"ContainerPort":80,"Protocol":"tcp","HostIP":""}`,
 * `IngressRate`..., `Servers`/`Searches`/`Options`), and every Go plugin accepts that because
 * encoding/json matches object keys to struct fields case-insensitively. A plugin that reads only
 * `hostPort` rejects the ADD and the DEL of every Kubernetes pod with a hostPort.
 *
 * The rules, from encoding/json's documentation (Unmarshal) and its decoder:
 * - A key matches a field when the two are equal under Unicode simple case folding. Field names
 *   here are ASCII, and the only non-ASCII characters that fold to ASCII letters are KELVIN SIGN
 *   (U+212A, folds to k) and LATIN SMALL LETTER LONG S (U+017F, folds to s): Go accepts
 *   `"ſubnet"` for `subnet`; tsnet does too.
 * - Keys are decoded in document order, each into its field, so when two keys match one field
 *   (`hostPort` and `HostPort`), the later one wins; when both are objects (a struct, a map or a
 *   non-nil pointer), the later one is decoded into what the first left: the two merge.
 * - JSON null sets a slice, map, pointer or interface field to nil (kind 'nullable') and has no
 *   effect on any other field (kind 'value'): `{"hostPort":80,"HostPort":null}` is port 80.
 * A field that is absent, or null, reads as undefined. Keys of a Go map (capability names,
 * Podman's per-network aliases) are not fields: they are matched exactly, by plain indexing.
 *
 * One divergence: JSON.parse has already resolved a key repeated with exactly the same spelling
 * (last value, at the first occurrence's position), so `{"a":1,"A":2,"a":3}` reads 2 here and 3 in
 * Go, and when two spellings of an object merge, a null under a key both spell alike keeps the
 * earlier value even for a nullable field. Each spelling once per object, the case a peer
 * produces, reads as Go does.
 */

/** Go field kinds, as far as null and repeated keys are concerned. */
export type GoKind = 'value' | 'nullable';

export const isJsonObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** A key folded as encoding/json compares it with an ASCII field name. */
function fold(key: string): string {
  let out = '';
  for (const ch of key) {
    if (ch === '\u212a') out += 'k';
    else if (ch === '\u017f') out += 's';
    else out += ch < '\x80' ? ch.toLowerCase() : ch;
  }
  return out;
}

/**
 * `later` decoded into what `earlier` left (a struct, map or pointer decoded twice): later keys
 * win and move last, so that document order still decides between spellings; an object under the
 * same key merges again; a null under the same key leaves the earlier value (see the header).
 */
function merge(earlier: Record<string, unknown>, later: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...earlier };
  for (const [k, v] of Object.entries(later)) {
    const prev = out[k];
    if (v === null && prev !== undefined) continue;
    delete out[k];
    out[k] = isJsonObject(v) && isJsonObject(prev) ? merge(prev, v) : v;
  }
  return out;
}

/**
 * The value of field `name` (an ASCII field name or json tag) of `obj` as Go's decoder would set
 * it; undefined when `obj` is not an object or no key sets the field.
 */
export function goField(obj: unknown, name: string, kind: GoKind = 'value'): unknown {
  if (!isJsonObject(obj)) return undefined;
  const want = fold(name);
  let out: unknown;
  for (const [key, v] of Object.entries(obj)) {
    if (key.length !== name.length || fold(key) !== want) continue; // fold keeps the length
    if (v === null) {
      if (kind === 'nullable') out = undefined;
      continue;
    }
    out = isJsonObject(v) && isJsonObject(out) ? merge(out, v) : v;
  }
  return out;
}

/** `goField` down a path of fields: `goPath(config, ['runtimeConfig', 'portMappings'], 'nullable')`. The kind applies to the last field. */
export function goPath(obj: unknown, path: readonly string[], kind: GoKind = 'value'): unknown {
  let cur = obj;
  path.forEach((name, i) => {
    cur = goField(cur, name, i === path.length - 1 ? kind : 'value');
  });
  return cur;
}
