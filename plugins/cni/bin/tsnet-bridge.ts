#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node
// The tsnet-bridge CNI plugin binary (bundled to dist/tsnet-bridge.js by scripts/build.mjs).
import { runPlugin } from '../main.js';

await runPlugin('bridge');
