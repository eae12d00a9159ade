/**
 * Request batching, after Ray Serve's `@serve.batch`: concurrent calls are collected into one
 * call with a list of at most `maxBatchSize` items; a batch starts once it is full or
 * `batchWaitTimeoutMs` after its first item arrived. The function returns one result per item, in
 * order; an item whose result is an Error rejects that caller only. One batch runs at a time per
 * batcher (items arriving meanwhile form the next one).
 *
 *   class Model {
 *     predict = batch(async (texts: string[]) => this.model.run(texts), { maxBatchSize: 8 });
 *     @route.post("/predict") async handle(req) { return this.predict(req.body.text); }
 *   }
 *
 * or as a method decorator, `@batched({ maxBatchSize: 8 })`, which batches per instance.
 */

export interface BatchOptions {
  /** Default 10. */
  maxBatchSize?: number;
  /** Default 10 ms. */
  batchWaitTimeoutMs?: number;
}

/** The batch function broke its contract (did not return one result per item). */
export class BatchError extends Error {
  override name = "BatchError";
}

interface Pending<T, R> {
  item: T;
  resolve: (value: R) => void;
  reject: (err: unknown) => void;
}

function checkedOptions(opts: BatchOptions): { maxBatchSize: number; waitMs: number } {
  const maxBatchSize = opts.maxBatchSize ?? 10;
  const waitMs = opts.batchWaitTimeoutMs ?? 10;
  if (!Number.isInteger(maxBatchSize) || maxBatchSize < 1)
    throw new RangeError(`maxBatchSize must be a positive integer, got ${maxBatchSize}`);
  if (!Number.isFinite(waitMs) || waitMs < 0)
    throw new RangeError(`batchWaitTimeoutMs must be a non-negative number, got ${waitMs}`);
  return { maxBatchSize, waitMs };
}

/** Turns `fn(items) => results` into `(item) => Promise<result>` that batches concurrent calls. */
export function batch<T, R>(
  fn: (items: T[]) => R[] | Promise<R[]>,
  opts: BatchOptions = {},
): (item: T) => Promise<R> {
  const { maxBatchSize, waitMs } = checkedOptions(opts);
  const queue: Pending<T, R>[] = [];
  let running = false;
  let filled: (() => void) | undefined;

  const runBatch = async (pending: Pending<T, R>[]) => {
    let results: R[];
    try {
      results = Array.from(await fn(pending.map((p) => p.item)));
      if (results.length !== pending.length)
        throw new BatchError(
          `${fn.name || "batch function"} returned ${results.length} results for a batch of ${pending.length} items`,
        );
    } catch (err) {
      for (const p of pending) p.reject(err);
      return;
    }
    pending.forEach((p, i) => {
      const result = results[i]!;
      if (result instanceof Error) p.reject(result);
      else p.resolve(result);
    });
  };

  const work = async () => {
    running = true;
    try {
      while (queue.length > 0) {
        if (queue.length < maxBatchSize)
          await new Promise<void>((done) => {
            const timer = setTimeout(done, waitMs);
            filled = () => {
              clearTimeout(timer);
              done();
            };
          });
        filled = undefined;
        await runBatch(queue.splice(0, maxBatchSize));
      }
    } finally {
      running = false;
    }
  };

  return (item: T) =>
    new Promise<R>((resolve, reject) => {
      queue.push({ item, resolve, reject });
      if (queue.length >= maxBatchSize) filled?.();
      if (!running) void work();
    });
}

type Method = (this: any, items: any[]) => any;

/**
 * Method decorator form of `batch` (TC39 or experimentalDecorators): the decorated method takes a
 * list and returns a list; callers pass one item and await one result. Batches per instance.
 */
export function batched(opts: BatchOptions = {}) {
  checkedOptions(opts);
  const wrap = (method: Method) => {
    const perInstance = new WeakMap<object, (item: unknown) => Promise<unknown>>();
    return function (this: object, item: unknown) {
      let batcher = perInstance.get(this);
      if (!batcher) {
        batcher = batch((items: unknown[]) => method.call(this, items), opts);
        perInstance.set(this, batcher);
      }
      return batcher(item);
    };
  };
  return (value: any, context: any, descriptor?: PropertyDescriptor): any => {
    if (descriptor && typeof descriptor.value === "function") {
      descriptor.value = wrap(descriptor.value);
      return descriptor;
    }
    if (typeof value !== "function" || (context && context.kind !== "method"))
      throw new TypeError("@batched applies to methods");
    return wrap(value);
  };
}
