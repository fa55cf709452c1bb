/**
 * Deterministic DNS fuzz input: random byte strings and mutations of valid queries (bit flips,
 * truncation, garbage tails, huge section counts, compression-pointer loops, long labels). Used by
 * the answerer's unit test, the resolver's privileged test and the dns benchmark.
 */

/** mulberry32: a small seeded PRNG, so a failing case can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

export function* fuzzPackets(opts: { readonly count: number; readonly seeds: readonly Buffer[]; readonly seed?: number }): Generator<Buffer> {
  const rnd = prng(opts.seed ?? 1);
  const int = (n: number): number => Math.floor(rnd() * n);
  for (let i = 0; i < opts.count; i++) {
    const kind = int(8);
    if (kind === 0 || opts.seeds.length === 0) {
      const b = Buffer.alloc(int(600));
      for (let j = 0; j < b.length; j++) b[j] = int(256);
      // Mostly queries (QR clear), so the fuzz reaches the decoder rather than the early drop.
      if (b.length > 2 && int(4) > 0) b[2] = (b[2] ?? 0) & 0x7f;
      yield b;
      continue;
    }
    const seed = opts.seeds[int(opts.seeds.length)] as Buffer;
    const b = Buffer.from(seed);
    switch (kind) {
      case 1: // bit flips
        for (let k = 0, n = 1 + int(4); k < n; k++) {
          const at = int(b.length);
          b[at] = (b[at] ?? 0) ^ (1 << int(8));
        }
        yield b;
        break;
      case 2: // truncation
        yield b.subarray(0, int(b.length));
        break;
      case 3: { // garbage tail
        const tail = Buffer.alloc(1 + int(64));
        for (let j = 0; j < tail.length; j++) tail[j] = int(256);
        yield Buffer.concat([b, tail]);
        break;
      }
      case 4: // huge counts
        b.writeUInt16BE(int(65536), 4 + 2 * int(4));
        yield b;
        break;
      case 5: { // a compression pointer to itself (or before itself) in the question name
        if (b.length > 14) {
          b[12] = 0xc0;
          b[13] = int(2) === 0 ? 12 : int(b.length);
        }
        yield b;
        break;
      }
      case 6: { // a label length past the end
        if (b.length > 12) b[12] = 63;
        yield b.subarray(0, Math.min(b.length, 20 + int(40)));
        break;
      }
      default: // random bytes over a random window
        for (let k = 0, n = 1 + int(8); k < n; k++) b[12 + int(Math.max(1, b.length - 12))] = int(256);
        yield b;
    }
  }
}
