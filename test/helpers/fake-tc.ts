/** Traffic shaping recorded instead of applied, for unit tests of the drivers and the CNI plugins. */
import type { Shape, TcFor } from '../../sys/api.js';

export interface FakeTc {
  readonly tcFor: TcFor;
  /** Every shape applied, in order: the namespace ("host" or its path), the device, the shape. */
  readonly shaped: { readonly ns: string; readonly dev: string; readonly shape: Shape }[];
}

export function fakeTc(): FakeTc {
  const shaped: { ns: string; dev: string; shape: Shape }[] = [];
  return {
    shaped,
    tcFor: (ns) => ({
      ns,
      shape: async (dev, s) => void shaped.push({ ns: ns.kind === 'host' ? 'host' : ns.path, dev, shape: s }),
      impair: async () => {
        throw new Error('fake tc: impairments are not recorded here (cnm/links.test.ts records its own)');
      },
    }),
  };
}
