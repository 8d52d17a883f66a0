/**
 * "At most rollout.maxParallel hosts at once". Hand-written because p-limit is not a dependency
 * and this is twenty lines; unlike Promise.all over p-limit, a failure stops new work from
 * starting and waits for the work already running, so no host is still being changed when the
 * caller releases the cluster lock or reports.
 */

/** Runs fn over items, at most `limit` at a time; results in item order. Rejects with the first error, after in-flight work settles. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  let firstError: { error: unknown } | undefined;
  const settled = await runLimited(items, limit, fn, () => firstError === undefined, (error) => {
    firstError ??= { error };
  });
  if (firstError !== undefined) throw firstError.error;
  return settled.map((s) => (s as PromiseFulfilledResult<R>).value);
}

/** Like mapLimit, but runs every item and reports each outcome (for checks, where every host's answer matters). */
export async function mapLimitSettled<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  return runLimited(items, limit, fn, () => true, () => undefined);
}

async function runLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
  keepGoing: () => boolean,
  onError: (error: unknown) => void,
): Promise<PromiseSettledResult<R>[]> {
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`mapLimit: limit must be a positive integer, got ${limit}`);
  const results: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length && keepGoing()) {
      const index = next++;
      try {
        results[index] = { status: 'fulfilled', value: await fn(items[index]!, index) };
      } catch (reason) {
        results[index] = { status: 'rejected', reason };
        onError(reason);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
