const KINDS = Symbol.for("tessera.errorKinds");

/**
 * Throw from a handler to answer with a client error instead of a 500 HANDLER_ERROR.
 *
 * The runtime server and the handler bundle each carry a copy of this module, so errors made by
 * one copy (a handle call's HandleError) must pass `instanceof` checks against the other: each
 * instance records the `kind`s of its classes, and `instanceof` compares kinds.
 */
export class HttpError extends Error {
  static readonly kind: string = "HttpError";
  readonly status: number;
  readonly code: string;
  constructor(status: number, message: string, code = "BAD_REQUEST") {
    super(message);
    this.status = status;
    this.code = code;
    const kinds: string[] = [];
    for (let c = new.target; c && c !== (Error as unknown); c = Object.getPrototypeOf(c))
      if (Object.hasOwn(c, "kind")) kinds.push((c as typeof HttpError).kind);
    Object.defineProperty(this, KINDS, { value: kinds });
  }
}

// `this` is the class on the right of `instanceof`, a subclass too (inherited static).
Object.defineProperty(HttpError, Symbol.hasInstance, {
  value: function hasInstance(this: typeof HttpError, value: unknown): boolean {
    // A tenant's own subclass without a `kind` keeps the ordinary prototype check.
    if (!Object.hasOwn(this, "kind")) return Function.prototype[Symbol.hasInstance].call(this, value);
    const kinds = (value as { [KINDS]?: unknown } | null)?.[KINDS];
    return Array.isArray(kinds) && kinds.includes(this.kind);
  },
});
