#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node
// The tsnet-portmap CNI plugin binary (bundled to dist/tsnet-portmap.js by scripts/build.mjs).
import { runPlugin } from '../main.js';

await runPlugin('portmap');
