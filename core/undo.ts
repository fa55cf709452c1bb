import type { Logger } from './log.js';

/**
 * Records how to undo each completed setup step; on failure `unwind` runs them in reverse order.
 * `unwind` logs failures and never throws, so the original error is what the caller reports.
 */
export class UndoStack {
  readonly #steps: { readonly label: string; readonly run: () => Promise<unknown> }[] = [];

  push(label: string, run: () => Promise<unknown>): void {
    this.#steps.push({ label, run });
  }

  get size(): number {
    return this.#steps.length;
  }

  /** Forget every step: the setup succeeded and owns its resources now. */
  commit(): void {
    this.#steps.length = 0;
  }

  async unwind(log: Logger): Promise<void> {
    while (this.#steps.length > 0) {
      const step = this.#steps.pop();
      if (step === undefined) break;
      try {
        await step.run();
      } catch (err) {
        log.warn('undo step failed', { step: step.label, err });
      }
    }
  }
}
