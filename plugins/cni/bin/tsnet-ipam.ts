#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node
// The tsnet-ipam CNI plugin binary (bundled to dist/tsnet-ipam.js by scripts/build.mjs).
import { runPlugin } from '../main.js';

await runPlugin('ipam');
