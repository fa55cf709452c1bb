#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node
'use strict';
// A tsnet CNI plugin binary (tsnet-bridge, tsnet-ipam, tsnet-portmap: the same file under three
// names; the name picks the plugin). It runs the shared bundle tsnet-cni.cjs beside it through a
// V8 code cache (tsnet-cni.cjs.cache), because compiling the ~1 MB bundle is most of a plugin's
// start-up (measured: 36 of ~75 ms above `node -e 0`). The cache is made by scripts/build.mjs
// and `tsnet cni install`; if V8 rejects it (another node version), the bundle is compiled as
// usual and the cache rewritten when the directory is writable. CommonJS, so it runs the same from
// dist/ (a "type": "module" package, hence .cjs) and extensionless from /opt/cni/bin.
const { readFileSync, renameSync, writeFileSync } = require('node:fs');
const { basename, join } = require('node:path');
const { wrap } = require('node:module');
const { Script } = require('node:vm');

const kind = basename(__filename).replace(/\.cjs$/, '').replace(/^tsnet-/, '');
const file = join(__dirname, 'tsnet-cni.cjs');
const cacheFile = `${file}.cache`;
let cache;
try {
  cache = readFileSync(cacheFile);
} catch {
  cache = undefined;
}
const script = new Script(wrap(readFileSync(file, 'utf8')), { filename: file, ...(cache ? { cachedData: cache } : {}) });
const mod = { exports: {} };
script.runInThisContext()(mod.exports, require, mod, file, __dirname);
if (cache === undefined || script.cachedDataRejected) {
  try {
    const tmp = `${cacheFile}.${process.pid}`;
    writeFileSync(tmp, script.createCachedData());
    renameSync(tmp, cacheFile);
  } catch {
    // a read-only plugin directory: run without the cache
  }
}
void mod.exports.runPlugin(kind);
