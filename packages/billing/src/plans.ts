import { TesseraError } from "@tessera/core";
import {
  billingAccounts,
  type Database,
  deployments,
  organisations,
  plans,
  revisions,
  type Transaction,
  usageHourly,
} from "@tessera/db";
import { and, eq, gte, isNull, notInArray, sql } from "drizzle-orm";
import { METERED_QUANTITIES, type MeteredQuantity, type Quantities, zeroQuantities } from "./metering.js";

/** Limits of a plan; null means unlimited. */
export interface PlanLimits {
  /** Replicas an organisation may run at once, across its deployments. */
  maxReplicas: number | null;
  /** CPU cores across all replicas at once. */
  maxCpus: number | null;
  /** GPUs (fractions add up) across all replicas at once. */
  maxGpus: number | null;
  /** Live deployments. */
  maxDeployments: number | null;
  /** Requests per calendar month (UTC); past it the gateway answers PAYMENT_REQUIRED. */
  monthlyRequests: number | null;
  /** Requests per minute per organisation; past it the gateway answers RATE_LIMITED. */
  requestsPerMinute: number | null;
}

/** USD per unit of each metered quantity. */
export type PlanPrices = Record<MeteredQuantity, number>;

export interface Plan {
  id: string;
  name: string;
  limits: PlanLimits;
  prices: PlanPrices;
  /** Whether the plan is billed through Stripe (needs a subscription). */
  paid: boolean;
}

const FREE_PRICES: PlanPrices = zeroQuantities();

/** Built-in plans; a `plans` row with the same id overrides one (limits and prices). */
export const DEFAULT_PLANS: Record<string, Plan> = {
  free: {
    id: "free",
    name: "Free",
    paid: false,
    limits: {
      maxReplicas: 2,
      maxCpus: 2,
      maxGpus: 0,
      maxDeployments: 3,
      monthlyRequests: 100_000,
      requestsPerMinute: 600,
    },
    prices: FREE_PRICES,
  },
  payg: {
    id: "payg",
    name: "Pay as you go",
    paid: true,
    limits: {
      maxReplicas: 100,
      maxCpus: 256,
      maxGpus: 16,
      maxDeployments: null,
      monthlyRequests: null,
      requestsPerMinute: 60_000,
    },
    prices: {
      requests: 0.000_002,
      cpuSeconds: 0.000_02,
      gpuSeconds: 0.000_4,
      memoryGibSeconds: 0.000_002_5,
      buildSeconds: 0.000_1,
      egressBytes: 0.09 / 1024 ** 3,
    },
  },
};

export const PAID_PLAN_ID = "payg";

/** A payment failure blocks new deploys at once; serving stops after this grace period. */
export const PAYMENT_GRACE_MS = 7 * 24 * 3_600_000;

/** What the plan checks read through: the database, or the transaction that then writes the deploy. */
export type PlanReader = Pick<Database, "select">;

/**
 * Takes the organisation's plan lock until `tx` ends. Every transaction that can grow an
 * organisation's footprint takes it before its check and its write, so two of them run one after
 * the other and cannot both pass the check and together exceed the plan. Take it first in the
 * transaction, before any row lock, so that no two such transactions wait on each other.
 */
export async function lockOrgPlan(tx: Transaction, orgId: string): Promise<void> {
  await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`plan:${orgId}`}, 0))`);
}

/** The plan named `id`: its `plans` row merged over the built-in default (unknown ids fall back to free). */
export async function loadPlan(db: PlanReader, id: string): Promise<Plan> {
  const base = DEFAULT_PLANS[id] ?? DEFAULT_PLANS.free!;
  const [row] = await db.select().from(plans).where(eq(plans.id, id));
  if (!row) return base;
  return {
    id: row.id,
    name: row.name,
    paid: base.paid,
    limits: { ...base.limits, ...(row.limits as Partial<PlanLimits>) },
    prices: { ...base.prices, ...(row.prices as Partial<PlanPrices>) },
  };
}

/** Price of the given quantities under a plan, in USD. */
export function costOf(
  prices: PlanPrices,
  q: Partial<Quantities>,
): { total: number; byQuantity: Quantities } {
  const byQuantity = Object.fromEntries(
    METERED_QUANTITIES.map((k) => [k, (q[k] ?? 0) * prices[k]]),
  ) as Quantities;
  return { total: Object.values(byQuantity).reduce((a, b) => a + b, 0), byQuantity };
}

export const monthStart = (now: Date) => new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));

export interface OrgBillingState {
  orgId: string;
  plan: Plan;
  paymentFailed: boolean;
  paymentFailedAt: Date | null;
  /** Requests counted by the hourly rollup since the start of the month (UTC). */
  monthlyRequests: number;
}

export async function loadOrgBillingState(
  db: PlanReader,
  orgId: string,
  now = new Date(),
): Promise<OrgBillingState> {
  const [org] = await db
    .select({
      plan: organisations.plan,
      paymentFailed: billingAccounts.paymentFailed,
      paymentFailedAt: billingAccounts.paymentFailedAt,
    })
    .from(organisations)
    .leftJoin(billingAccounts, eq(billingAccounts.orgId, organisations.id))
    .where(eq(organisations.id, orgId));
  if (!org) throw new TesseraError("NOT_FOUND", "organisation not found");
  const [used] = await db
    .select({ n: sql<number>`coalesce(sum(${usageHourly.requests}), 0)::bigint` })
    .from(usageHourly)
    .where(and(eq(usageHourly.orgId, orgId), gte(usageHourly.hour, monthStart(now))));
  return {
    orgId,
    plan: await loadPlan(db, org.plan),
    paymentFailed: org.paymentFailed ?? false,
    paymentFailedAt: org.paymentFailedAt ?? null,
    monthlyRequests: Number(used?.n ?? 0),
  };
}

export interface DeployRequest {
  /** The deployment being replaced (its current footprint is not counted twice), or null for a new one. */
  deploymentId?: string | null;
  resources: { cpus: number; gpus: number; memoryMb: number };
  /** Most replicas the deployment may run after the deploy: its replica count, or its autoscaling maximum. */
  replicas: number;
}

interface Footprint {
  replicas: number;
  cpus: number;
  gpus: number;
  deployments: number;
}

/**
 * Refuse a deploy (or scale-up) that the organisation's plan or billing state does not allow, with
 * PAYMENT_REQUIRED and a message that says which limit and how to lift it. The footprint counts
 * every other live deployment at its most replicas (autoscaling max), so autoscaling can never
 * take an organisation past its plan. Racing deploys are only refused reliably when `db` is a
 * transaction holding `lockOrgPlan` that then makes the write.
 */
export async function checkDeployAllowed(
  db: PlanReader,
  orgId: string,
  /** Several for one deploy of many deployments (a Ray Serve application), checked together. */
  request: DeployRequest | DeployRequest[],
  now = new Date(),
): Promise<void> {
  const requests = [request].flat();
  const state = await loadOrgBillingState(db, orgId, now);
  if (state.paymentFailed)
    throw new TesseraError(
      "PAYMENT_REQUIRED",
      "the last invoice payment failed: update the payment method in Billing to deploy again",
      {
        reason: "payment_failed",
      },
    );
  const { limits } = state.plan;
  const replaced = requests.flatMap((r) => (r.deploymentId ? [r.deploymentId] : []));
  const after = await footprint(db, orgId, replaced);
  for (const r of requests) {
    after.replicas += r.replicas;
    after.cpus += r.replicas * r.resources.cpus;
    after.gpus += r.replicas * r.resources.gpus;
    after.deployments += 1;
  }
  const checks: [keyof Footprint, number | null, string][] = [
    ["deployments", limits.maxDeployments, "deployments"],
    ["replicas", limits.maxReplicas, "replicas"],
    ["cpus", limits.maxCpus, "CPU cores"],
    ["gpus", limits.maxGpus, "GPUs"],
  ];
  for (const [key, limit, what] of checks) {
    if (limit !== null && after[key] > limit + 1e-9)
      throw new TesseraError(
        "PAYMENT_REQUIRED",
        `the ${state.plan.name} plan allows ${limit} ${what}; this deploy would use ${round(after[key])}. Upgrade in Billing or scale down`,
        { reason: "plan_limit", limit: key, allowed: limit, requested: round(after[key]) },
      );
  }
  if (limits.monthlyRequests !== null && state.monthlyRequests >= limits.monthlyRequests)
    throw new TesseraError(
      "PAYMENT_REQUIRED",
      `the ${state.plan.name} plan's ${limits.monthlyRequests} requests this month are used up: upgrade in Billing to deploy`,
      { reason: "monthly_requests", allowed: limits.monthlyRequests, used: state.monthlyRequests },
    );
}

/** `checkDeployAllowed` for a scaling change of an existing deployment (resources from its desired revision). */
export async function checkScaleAllowed(
  db: PlanReader,
  orgId: string,
  deploymentId: string,
  replicas: number,
  now = new Date(),
) {
  const [dep] = await db
    .select({ config: revisions.config, target: deployments.targetReplicas, scaling: deployments.scaling })
    .from(deployments)
    .innerJoin(revisions, eq(revisions.id, deployments.desiredRevisionId))
    .where(and(eq(deployments.id, deploymentId), eq(deployments.orgId, orgId)));
  // Nothing deployed yet: no footprint to grow. Shrinking is always allowed, even over the plan.
  if (!dep || replicas <= mostReplicas(dep.target, dep.scaling)) return;
  const r = (dep.config as { resources?: Partial<DeployRequest["resources"]> }).resources ?? {};
  await checkDeployAllowed(
    db,
    orgId,
    {
      deploymentId,
      replicas,
      resources: { cpus: r.cpus ?? 1, gpus: r.gpus ?? 0, memoryMb: r.memoryMb ?? 512 },
    },
    now,
  );
}

/** Replicas a deployment may run: its target, or its autoscaling maximum when higher. */
export function mostReplicas(target: number, scaling: Record<string, unknown>): number {
  const max = (scaling.autoscaling as { maxReplicas?: number } | undefined)?.maxReplicas ?? 0;
  return Math.max(target, max);
}

const round = (n: number) => Math.round(n * 1000) / 1000;

async function footprint(db: PlanReader, orgId: string, exceptDeploymentIds: string[]): Promise<Footprint> {
  const rows = await db
    .select({ target: deployments.targetReplicas, scaling: deployments.scaling, config: revisions.config })
    .from(deployments)
    .innerJoin(revisions, eq(revisions.id, deployments.desiredRevisionId))
    .where(
      and(
        eq(deployments.orgId, orgId),
        isNull(deployments.deletedAt),
        exceptDeploymentIds.length ? notInArray(deployments.id, exceptDeploymentIds) : undefined,
      ),
    );
  const out: Footprint = { replicas: 0, cpus: 0, gpus: 0, deployments: rows.length };
  for (const r of rows) {
    const c = r.config as { resources?: { cpus?: number; gpus?: number } };
    const n = mostReplicas(r.target, r.scaling);
    out.replicas += n;
    out.cpus += n * (c.resources?.cpus ?? 1);
    out.gpus += n * (c.resources?.gpus ?? 0);
  }
  return out;
}

export type Admission =
  | { ok: true }
  | { ok: false; code: "RATE_LIMITED" | "PAYMENT_REQUIRED"; message: string; retryAfterS?: number };

/**
 * Gateway admission for one request, as a pure function of the org's billing state (which the
 * gateway refreshes periodically with `loadOrgBillingState`) and the org's per-minute count (which
 * `OrgAdmission` can share across gateways).
 * Policy: per-minute rate over the plan -> RATE_LIMITED with Retry-After (transient); the free
 * monthly quota used up, or a payment failure older than the grace period -> PAYMENT_REQUIRED
 * (needs the tenant to act). `requestsThisMinute` excludes the request being admitted.
 */
export function admitRequest(
  state: Pick<OrgBillingState, "plan" | "paymentFailed" | "paymentFailedAt" | "monthlyRequests">,
  window: { requestsThisMinute: number; requestsSinceRollup?: number },
  now: Date,
): Admission {
  if (
    state.paymentFailed &&
    state.paymentFailedAt &&
    now.getTime() - state.paymentFailedAt.getTime() > PAYMENT_GRACE_MS
  )
    return {
      ok: false,
      code: "PAYMENT_REQUIRED",
      message:
        "payment for this organisation has failed for over 7 days: update the payment method in Billing",
    };
  const { limits } = state.plan;
  if (
    limits.monthlyRequests !== null &&
    state.monthlyRequests + (window.requestsSinceRollup ?? 0) >= limits.monthlyRequests
  )
    return {
      ok: false,
      code: "PAYMENT_REQUIRED",
      message: `the ${state.plan.name} plan's ${limits.monthlyRequests} requests this month are used up: upgrade in Billing`,
    };
  if (limits.requestsPerMinute !== null && window.requestsThisMinute >= limits.requestsPerMinute)
    return {
      ok: false,
      code: "RATE_LIMITED",
      message: `the ${state.plan.name} plan allows ${limits.requestsPerMinute} requests per minute`,
      retryAfterS: Math.max(1, 60 - now.getUTCSeconds()),
    };
  return { ok: true };
}
