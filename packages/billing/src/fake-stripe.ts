import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A local HTTP server that plays the Stripe REST endpoints Tessera calls, with Stripe's semantics:
 * form-encoded bodies with bracketed keys, Bearer secret-key auth, `Idempotency-Key` replaying the
 * first response (and refusing the same key with other parameters), meter event identifiers
 * unique, errors as `{error: {type, code, message, param}}`. `dropAfterProcessing(path)` makes
 * the next request to a path take effect and then lose its connection, like a network failure
 * after Stripe committed: the caller cannot tell and must retry safely.
 */
export class FakeStripe {
  readonly secretKey = `sk_test_${randomBytes(8).toString("hex")}`;
  readonly customers = new Map<string, Record<string, unknown>>();
  readonly meterEvents: Record<string, unknown>[] = [];
  readonly invoices: Record<string, unknown>[] = [];
  readonly checkoutSessions: Record<string, unknown>[] = [];
  /** Every request: method, path, idempotency key, whether it was answered by replay. */
  readonly requests: { method: string; path: string; idempotencyKey: string | null; replayed: boolean }[] =
    [];
  private readonly idempotent = new Map<string, { fingerprint: string; status: number; body: unknown }>();
  private readonly drops = new Map<string, number>();
  private server: Server | null = null;
  port = 0;

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        res.writeHead(500).end(JSON.stringify({ error: { type: "api_error", message: String(err) } }));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }

  /** The next `times` requests to `path` take effect (or replay) and then lose their connection. */
  dropAfterProcessing(path: string, times = 1): void {
    this.drops.set(path, times);
  }

  private shouldDrop(path: string): boolean {
    const left = this.drops.get(path) ?? 0;
    if (left <= 0) return false;
    this.drops.set(path, left - 1);
    return true;
  }

  keysSeen(path: string): string[] {
    return this.requests.filter((r) => r.path === path && r.idempotencyKey).map((r) => r.idempotencyKey!);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString("utf8");
    const url = new URL(req.url ?? "/", "http://stripe.test");
    const method = req.method ?? "GET";
    const key = (req.headers["idempotency-key"] as string | undefined) ?? null;
    const send = (status: number, body: unknown) => {
      res.writeHead(status, {
        "content-type": "application/json",
        "request-id": `req_${randomBytes(6).toString("hex")}`,
      });
      res.end(JSON.stringify(body));
    };

    if (req.headers.authorization !== `Bearer ${this.secretKey}`) {
      this.requests.push({ method, path: url.pathname, idempotencyKey: key, replayed: false });
      return send(401, {
        error: { type: "invalid_request_error", message: "Invalid API Key provided: sk_***" },
      });
    }
    const params = method === "GET" ? decodeForm(url.searchParams.toString()) : decodeForm(raw);
    const fingerprint = `${method} ${url.pathname} ${raw}`;
    if (key && method === "POST") {
      const prior = this.idempotent.get(key);
      if (prior) {
        this.requests.push({ method, path: url.pathname, idempotencyKey: key, replayed: true });
        if (prior.fingerprint !== fingerprint)
          return send(400, {
            error: {
              type: "idempotency_error",
              message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${key}' if you meant to execute a different request.`,
            },
          });
        if (this.shouldDrop(url.pathname)) return void req.socket.destroy();
        res.setHeader("idempotent-replayed", "true");
        return send(prior.status, prior.body);
      }
    }
    this.requests.push({ method, path: url.pathname, idempotencyKey: key, replayed: false });
    const [status, body] = this.route(method, url.pathname, params);
    // Stripe stores the result of every request that reached it, errors included.
    if (key && method === "POST") this.idempotent.set(key, { fingerprint, status, body });
    if (this.shouldDrop(url.pathname)) return void req.socket.destroy();
    send(status, body);
  }

  private route(method: string, path: string, p: Params): [number, unknown] {
    const now = Math.floor(Date.now() / 1000);
    const missing = (param: string) =>
      [
        400,
        {
          error: {
            type: "invalid_request_error",
            code: "parameter_missing",
            param,
            message: `Missing required param: ${param}.`,
          },
        },
      ] as [number, unknown];
    const noCustomer = (id: unknown) =>
      [
        400,
        {
          error: {
            type: "invalid_request_error",
            code: "resource_missing",
            param: "customer",
            message: `No such customer: '${id}'`,
          },
        },
      ] as [number, unknown];

    if (method === "POST" && path === "/v1/customers") {
      const id = `cus_${randomBytes(7).toString("hex")}`;
      const customer = {
        id,
        object: "customer",
        created: now,
        livemode: false,
        name: p.name ?? null,
        metadata: p.metadata ?? {},
      };
      this.customers.set(id, customer);
      return [200, customer];
    }
    if (method === "POST" && path === "/v1/billing/meter_events") {
      if (!p.event_name) return missing("event_name");
      const payload = (p.payload ?? {}) as Record<string, string>;
      if (!payload.stripe_customer_id) return missing("payload[stripe_customer_id]");
      if (!this.customers.has(payload.stripe_customer_id)) return noCustomer(payload.stripe_customer_id);
      if (!/^\d+$/.test(payload.value ?? ""))
        return [
          400,
          {
            error: {
              type: "invalid_request_error",
              param: "payload[value]",
              message: "value must be a whole number",
            },
          },
        ];
      const identifier = (p.identifier as string) ?? `id_${randomBytes(8).toString("hex")}`;
      if (this.meterEvents.some((e) => e.identifier === identifier))
        return [
          400,
          {
            error: {
              type: "invalid_request_error",
              code: "meter_event_duplicate_identifier",
              message: `An event with identifier ${identifier} already exists.`,
            },
          },
        ];
      const event = {
        object: "billing.meter_event",
        created: now,
        livemode: false,
        event_name: p.event_name,
        identifier,
        payload,
        timestamp: Number(p.timestamp ?? now),
      };
      this.meterEvents.push(event);
      return [200, event];
    }
    if (method === "GET" && path === "/v1/invoices") {
      const data = this.invoices
        .filter((i) => !p.customer || i.customer === p.customer)
        .slice(0, Number(p.limit ?? 10));
      return [200, { object: "list", url: "/v1/invoices", has_more: false, data }];
    }
    if (method === "POST" && path === "/v1/checkout/sessions") {
      if (!p.mode) return missing("mode");
      if (!p.success_url) return missing("success_url");
      if (p.customer && !this.customers.has(p.customer as string)) return noCustomer(p.customer);
      const id = `cs_test_${randomBytes(8).toString("hex")}`;
      const session = {
        id,
        object: "checkout.session",
        ...p,
        url: `https://checkout.stripe.test/c/pay/${id}`,
      };
      this.checkoutSessions.push(session);
      return [200, session];
    }
    if (method === "POST" && path === "/v1/billing_portal/sessions") {
      if (!p.customer) return missing("customer");
      if (!this.customers.has(p.customer as string)) return noCustomer(p.customer);
      const id = `bps_${randomBytes(8).toString("hex")}`;
      return [
        200,
        {
          id,
          object: "billing_portal.session",
          customer: p.customer,
          return_url: p.return_url,
          url: `https://billing.stripe.test/p/session/${id}`,
        },
      ];
    }
    return [
      404,
      { error: { type: "invalid_request_error", message: `Unrecognized request URL (${method}: ${path}).` } },
    ];
  }
}

type Params = Record<string, unknown>;

/** `a[b][0][c]=x` form encoding (as the Stripe SDK writes it) into nested objects and arrays. */
export function decodeForm(body: string): Params {
  const out: Params = {};
  for (const [rawKey, value] of new URLSearchParams(body)) {
    const parts = rawKey.split(/\[|\]\[|\]/).filter((s) => s !== "");
    let node: Record<string, unknown> = out;
    parts.forEach((part, i) => {
      if (i === parts.length - 1) node[part] = value;
      else {
        node[part] ??= /^\d+$/.test(parts[i + 1]!) ? [] : {};
        node = node[part] as Record<string, unknown>;
      }
    });
  }
  return out;
}
