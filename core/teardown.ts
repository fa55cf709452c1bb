import { isCode } from './errors.js';

export interface TeardownStep {
  readonly label: string;
  readonly run: () => Promise<unknown>;
}

/**
 * Runs every step, whatever the others do. NOT_FOUND counts as done (teardown is idempotent);
 * every other failure is collected and thrown once, as an AggregateError, after all steps ran.
 */
export async function teardownAll(steps: readonly TeardownStep[]): Promise<void> {
  const errors: Error[] = [];
  for (const step of steps) {
    try {
      await step.run();
    } catch (err) {
      if (isCode(err, 'NOT_FOUND')) continue;
      const e = err instanceof Error ? err : new Error(String(err));
      errors.push(new Error(`${step.label}: ${e.message}`, { cause: e }));
    }
  }
  if (errors.length > 0) {
    throw new AggregateError(errors, `teardown: ${errors.map((e) => e.message).join('; ')}`);
  }
}
