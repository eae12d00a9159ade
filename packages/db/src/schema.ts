import { sql } from "drizzle-orm";
import {
  bigint,
  bigserial,
  boolean,
  doublePrecision,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from "drizzle-orm/pg-core";

const id = () => uuid("id").primaryKey().defaultRandom();
const createdAt = () => timestamp("created_at", { withTimezone: true }).notNull().defaultNow();
const ts = (name: string) => timestamp(name, { withTimezone: true });

// ---------------------------------------------------------------- identity

export const users = pgTable("users", {
  id: id(),
  email: text("email").notNull().unique(),
  name: text("name"),
  passwordHash: text("password_hash"),
  isPlatformAdmin: boolean("is_platform_admin").notNull().default(false),
  createdAt: createdAt(),
});

/** OAuth identities (GitHub) linked to a user. */
export const authAccounts = pgTable(
  "auth_accounts",
  {
    id: id(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    provider: text("provider").notNull(),
    providerAccountId: text("provider_account_id").notNull(),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex("auth_accounts_provider_uq").on(t.provider, t.providerAccountId)],
);

/**
 * Server-side record of every signed-in session. The session token (a next-auth JWT) carries the
 * row id; a token whose row is gone (signed out) or expired is rejected even if its signature holds.
 */
export const authSessions = pgTable(
  "auth_sessions",
  {
    id: id(),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    expiresAt: ts("expires_at").notNull(),
    createdAt: createdAt(),
    lastSeenAt: ts("last_seen_at"),
  },
  (t) => [index("auth_sessions_user_idx").on(t.userId)],
);

// ---------------------------------------------------------------- tenancy

export const organisations = pgTable("organisations", {
  id: id(),
  slug: text("slug").notNull().unique(),
  name: text("name").notNull(),
  personal: boolean("personal").notNull().default(false),
  plan: text("plan").notNull().default("free"),
  createdAt: createdAt(),
});

export type Role = "owner" | "admin" | "member";

export const memberships = pgTable(
  "memberships",
  {
    orgId: uuid("org_id")
      .notNull()
      .references(() => organisations.id, { onDelete: "cascade" }),
    userId: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    role: text("role").$type<Role>().notNull(),
    createdAt: createdAt(),
  },
  (t) => [primaryKey({ columns: [t.orgId, t.userId] }), index("memberships_user_idx").on(t.userId)],
);

export const invitations = pgTable(
  "invitations",
  {
    id: id(),
    orgId: uuid("org_id")
      .notNull()
      .references(() => organisations.id, { onDelete: "cascade" }),
    email: text("email").notNull(),
    role: text("role").$type<Role>().notNull(),
    tokenHash: text("token_hash").notNull().unique(),
    invitedBy: uuid("invited_by").references(() => users.id, { onDelete: "set null" }),
    expiresAt: ts("expires_at").notNull(),
    acceptedAt: ts("accepted_at"),
    revokedAt: ts("revoked_at"),
    createdAt: createdAt(),
  },
  (t) => [index("invitations_org_idx").on(t.orgId)],
);

export const apiKeys = pgTable(
  "api_keys",
  {
    id: id(),
    orgId: uuid("org_id")
      .notNull()
      .references(() => organisations.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    prefix: text("prefix").notNull().unique(),
    keyHash: text("key_hash").notNull(),
    createdBy: uuid("created_by").references(() => users.id, { onDelete: "set null" }),
    createdAt: createdAt(),
    lastUsedAt: ts("last_used_at"),
    revokedAt: ts("revoked_at"),
  },
  (t) => [index("api_keys_org_idx").on(t.orgId)],
);

// ---------------------------------------------------------------- serving

export type ClusterState = "pending" | "provisioning" | "ready" | "failed" | "deleting" | "deleted";

export const clusters = pgTable(
  "clusters",
  {
    id: id(),
    orgId: uuid("org_id")
      .notNull()
      .references(() => organisations.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    driver: text("driver").$type<"local" | "kubernetes">().notNull().default("local"),
    region: text("region").notNull().default("local"),
    /** Driver-specific settings, e.g. `{kubeconfig}` or `{inCluster: true}` for kubernetes. */
    driverConfig: jsonb("driver_config").$type<Record<string, unknown>>().notNull().default({}),
    /** `{cpus, memoryMb, gpus, maxReplicas}`. */
    quota: jsonb("quota")
      .$type<{ cpus: number; memoryMb: number; gpus: number; maxReplicas: number }>()
      .notNull(),
    state: text("state").$type<ClusterState>().notNull().default("pending"),
    stateReason: text("state_reason"),
    /** What the driver reported when provisioning, e.g. working directory, port range, namespace. */
    driverState: jsonb("driver_state").$type<Record<string, unknown>>().notNull().default({}),
    createdAt: createdAt(),
    deletedAt: ts("deleted_at"),
  },
  (t) => [uniqueIndex("clusters_org_name_uq").on(t.orgId, t.name).where(sql`deleted_at is null`)],
);

export const applications = pgTable(
  "applications",
  {
    id: id(),
    orgId: uuid("org_id")
      .notNull()
      .references(() => organisations.id, { onDelete: "cascade" }),
    clusterId: uuid("cluster_id")
      .notNull()
      .references(() => clusters.id),
    name: text("name").notNull(),
    /** Name of the deployment exposed at `/v1/{org}/{app}/...`. */
    ingressDeployment: text("ingress_deployment"),
    createdAt: createdAt(),
    deletedAt: ts("deleted_at"),
  },
  (t) => [uniqueIndex("applications_org_name_uq").on(t.orgId, t.name).where(sql`deleted_at is null`)],
);

export type DeploymentState =
  | "pending"
  | "deploying"
  | "ready"
  | "degraded"
  | "failed"
  | "parked"
  | "deleting"
  | "deleted";

export const deployments = pgTable(
  "deployments",
  {
    id: id(),
    orgId: uuid("org_id")
      .notNull()
      .references(() => organisations.id, { onDelete: "cascade" }),
    applicationId: uuid("application_id")
      .notNull()
      .references(() => applications.id),
    clusterId: uuid("cluster_id")
      .notNull()
      .references(() => clusters.id),
    name: text("name").notNull(),
    /** Revision that serves traffic now. */
    liveRevisionId: uuid("live_revision_id"),
    /**
     * Revision the controller is rolling towards (equals live when settled). A failed rollout
     * resets it, and `version`, back to the live revision.
     */
    desiredRevisionId: uuid("desired_revision_id"),
    /**
     * Version of the desired revision (0 = nothing deployed yet): the compare-and-set token a
     * deploy names as `prevVersion`, so concurrent deploys are detected at submit time.
     */
    version: integer("version").notNull().default(0),
    /** Scaling config, changeable without a new revision: `{numReplicas}` or `{autoscaling}`. */
    scaling: jsonb("scaling").$type<Record<string, unknown>>().notNull().default({}),
    /** Replicas the controller should run now (set by deploys, the operator API and the autoscaler). */
    targetReplicas: integer("target_replicas").notNull().default(1),
    /**
     * Canary traffic split `{canaryRevisionId, canaryPercent, startedAt}` (see `trafficSplit` in
     * @tessera/core), null when the live revision takes all traffic.
     */
    traffic: jsonb("traffic").$type<{ canaryRevisionId: string; canaryPercent: number; startedAt: string }>(),
    state: text("state").$type<DeploymentState>().notNull().default("pending"),
    stateReason: text("state_reason"),
    createdAt: createdAt(),
    updatedAt: ts("updated_at").notNull().defaultNow(),
    deletedAt: ts("deleted_at"),
  },
  (t) => [
    uniqueIndex("deployments_app_name_uq").on(t.applicationId, t.name).where(sql`deleted_at is null`),
    index("deployments_org_idx").on(t.orgId),
  ],
);

export type RevisionState =
  | "pending"
  | "building"
  | "starting"
  | "live"
  | "failed"
  | "superseded"
  | "rolled_back";

export const revisions = pgTable(
  "revisions",
  {
    id: id(),
    orgId: uuid("org_id")
      .notNull()
      .references(() => organisations.id, { onDelete: "cascade" }),
    deploymentId: uuid("deployment_id")
      .notNull()
      .references(() => deployments.id, { onDelete: "cascade" }),
    /** 1, 2, 3... per deployment. */
    version: integer("version").notNull(),
    /** Full, validated DeploymentConfig (see @tessera/core). */
    config: jsonb("config").$type<Record<string, unknown>>().notNull(),
    /** CodeBundle `{files, encoding}`. */
    code: jsonb("code").$type<{ files: Record<string, string>; encoding: "utf8" | "base64" }>().notNull(),
    envHash: text("env_hash").notNull(),
    /** Free-form name of this revision (e.g. Ray Serve's `version="v2"`, a git sha); not unique. */
    label: text("label"),
    state: text("state").$type<RevisionState>().notNull().default("pending"),
    failureReason: text("failure_reason"),
    createdBy: uuid("created_by").references(() => users.id, { onDelete: "set null" }),
    createdAt: createdAt(),
    liveAt: ts("live_at"),
  },
  (t) => [uniqueIndex("revisions_deployment_version_uq").on(t.deploymentId, t.version)],
);

export type EnvironmentState = "pending" | "building" | "ready" | "failed";

/** Content-addressed by the hash of runtime + normalised spec; shared by every deployment using it. */
export const environments = pgTable("environments", {
  hash: text("hash").primaryKey(),
  runtime: text("runtime").notNull(),
  spec: jsonb("spec").$type<Record<string, unknown>>().notNull(),
  state: text("state").$type<EnvironmentState>().notNull().default("pending"),
  failureReason: text("failure_reason"),
  path: text("path"),
  startedAt: ts("started_at"),
  finishedAt: ts("finished_at"),
  createdAt: createdAt(),
});

/** Build log lines, appended while the build runs so the console can stream them. */
export const environmentLogs = pgTable(
  "environment_logs",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    envHash: text("env_hash")
      .notNull()
      .references(() => environments.hash, { onDelete: "cascade" }),
    line: text("line").notNull(),
    at: createdAt(),
  },
  (t) => [index("environment_logs_env_idx").on(t.envHash, t.id)],
);

export type ReplicaState = "starting" | "ready" | "draining" | "stopped" | "failed";

export const replicas = pgTable(
  "replicas",
  {
    id: id(),
    orgId: uuid("org_id")
      .notNull()
      .references(() => organisations.id, { onDelete: "cascade" }),
    clusterId: uuid("cluster_id")
      .notNull()
      .references(() => clusters.id),
    deploymentId: uuid("deployment_id")
      .notNull()
      .references(() => deployments.id, { onDelete: "cascade" }),
    revisionId: uuid("revision_id")
      .notNull()
      .references(() => revisions.id, { onDelete: "cascade" }),
    /** `http://host:port` the gateway routes to. */
    address: text("address"),
    state: text("state").$type<ReplicaState>().notNull().default("starting"),
    stateReason: text("state_reason"),
    /** Resource class snapshot for metering: `{cpus, gpus, memoryMb}`. */
    resources: jsonb("resources").$type<{ cpus: number; gpus: number; memoryMb: number }>().notNull(),
    restarts: integer("restarts").notNull().default(0),
    startedAt: createdAt(),
    readyAt: ts("ready_at"),
    stoppedAt: ts("stopped_at"),
  },
  (t) => [index("replicas_deployment_idx").on(t.deploymentId, t.state)],
);

/** Structured replica log lines (JSON lines written by the runtimes), kept for the console. */
export const replicaLogs = pgTable(
  "replica_logs",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    orgId: uuid("org_id").notNull(),
    deploymentId: uuid("deployment_id").notNull(),
    replicaId: uuid("replica_id").notNull(),
    level: text("level").notNull().default("info"),
    message: text("message").notNull(),
    fields: jsonb("fields").$type<Record<string, unknown>>(),
    at: createdAt(),
  },
  (t) => [index("replica_logs_deployment_idx").on(t.deploymentId, t.id)],
);

// ---------------------------------------------------------------- control plane jobs

export type JobState = "queued" | "running" | "succeeded" | "failed";

/** One row per provisioner job: what the API and console show as progress. */
export const jobs = pgTable(
  "jobs",
  {
    id: id(),
    orgId: uuid("org_id").references(() => organisations.id, { onDelete: "cascade" }),
    kind: text("kind").notNull(),
    /** Idempotency key: a job with the same key is the same job. */
    dedupeKey: text("dedupe_key").notNull().unique(),
    subjectId: text("subject_id"),
    payload: jsonb("payload").$type<Record<string, unknown>>().notNull().default({}),
    state: text("state").$type<JobState>().notNull().default("queued"),
    attempts: integer("attempts").notNull().default(0),
    error: text("error"),
    createdAt: createdAt(),
    startedAt: ts("started_at"),
    finishedAt: ts("finished_at"),
  },
  (t) => [index("jobs_subject_idx").on(t.subjectId)],
);

export const jobLogs = pgTable(
  "job_logs",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    jobId: uuid("job_id")
      .notNull()
      .references(() => jobs.id, { onDelete: "cascade" }),
    line: text("line").notNull(),
    at: createdAt(),
  },
  (t) => [index("job_logs_job_idx").on(t.jobId, t.id)],
);

/** Every autoscaling or operator scaling decision. */
export const scalingEvents = pgTable(
  "scaling_events",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    orgId: uuid("org_id").notNull(),
    deploymentId: uuid("deployment_id")
      .notNull()
      .references(() => deployments.id, { onDelete: "cascade" }),
    fromReplicas: integer("from_replicas").notNull(),
    toReplicas: integer("to_replicas").notNull(),
    reason: text("reason").notNull(),
    metrics: jsonb("metrics").$type<Record<string, unknown>>(),
    at: createdAt(),
  },
  (t) => [index("scaling_events_deployment_idx").on(t.deploymentId, t.at)],
);

// ---------------------------------------------------------------- usage & audit

/** Append-only; `id` is the event's idempotency key (replays do not double count). */
export const usageEvents = pgTable(
  "usage_events",
  {
    id: text("id").primaryKey(),
    orgId: uuid("org_id").notNull(),
    deploymentId: uuid("deployment_id"),
    revisionId: uuid("revision_id"),
    /** `request` | `replica_seconds` | `build_seconds` | `egress_bytes` ... */
    kind: text("kind").notNull(),
    quantity: doublePrecision("quantity").notNull(),
    status: integer("status"),
    latencyMs: doublePrecision("latency_ms"),
    bytesIn: bigint("bytes_in", { mode: "number" }),
    bytesOut: bigint("bytes_out", { mode: "number" }),
    at: ts("at").notNull(),
    meta: jsonb("meta").$type<Record<string, unknown>>(),
    /** When the row reached Postgres: the hourly rollup re-aggregates the hours of late arrivals. */
    recordedAt: ts("recorded_at").notNull().defaultNow(),
  },
  (t) => [
    index("usage_events_org_at_idx").on(t.orgId, t.at),
    index("usage_events_deployment_at_idx").on(t.deploymentId, t.at),
    index("usage_events_recorded_at_idx").on(t.recordedAt),
    // The hourly rollup reads one hour of every organisation at once.
    index("usage_events_at_idx").on(t.at),
  ],
);

export const auditLog = pgTable(
  "audit_log",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    orgId: uuid("org_id"),
    userId: uuid("user_id"),
    /** e.g. `apiKey.create`, `deployment.deploy`. */
    action: text("action").notNull(),
    targetId: text("target_id"),
    details: jsonb("details").$type<Record<string, unknown>>(),
    at: createdAt(),
  },
  (t) => [index("audit_log_org_idx").on(t.orgId, t.at)],
);

// ---------------------------------------------------------------- metering, billing, uptime

/**
 * Usage rolled up per organisation, deployment (null: org-level, e.g. builds of a shared
 * environment) and hour. Derived data: every row is recomputed from usage_events and replicas,
 * so re-running the rollup for an hour gives the same row.
 */
export const usageHourly = pgTable(
  "usage_hourly",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    orgId: uuid("org_id").notNull(),
    deploymentId: uuid("deployment_id"),
    hour: ts("hour").notNull(),
    requests: bigint("requests", { mode: "number" }).notNull().default(0),
    /** Requests answered 5xx (the platform's or the handler's fault). */
    errors: bigint("errors", { mode: "number" }).notNull().default(0),
    /** Request counts per latency bucket (`LATENCY_BUCKETS_MS` in @tessera/billing). */
    latencyHistogram: jsonb("latency_histogram").$type<number[]>().notNull().default([]),
    latencySumMs: doublePrecision("latency_sum_ms").notNull().default(0),
    replicaSeconds: doublePrecision("replica_seconds").notNull().default(0),
    cpuSeconds: doublePrecision("cpu_seconds").notNull().default(0),
    gpuSeconds: doublePrecision("gpu_seconds").notNull().default(0),
    memoryGibSeconds: doublePrecision("memory_gib_seconds").notNull().default(0),
    buildSeconds: doublePrecision("build_seconds").notNull().default(0),
    egressBytes: bigint("egress_bytes", { mode: "number" }).notNull().default(0),
    computedAt: ts("computed_at").notNull().defaultNow(),
  },
  (t) => [
    index("usage_hourly_org_hour_idx").on(t.orgId, t.hour),
    index("usage_hourly_deployment_hour_idx").on(t.deploymentId, t.hour),
    index("usage_hourly_hour_idx").on(t.hour),
  ],
);

/** Where each rollup / sync loop got to, so a restarted job resumes instead of rescanning. */
export const billingCursors = pgTable("billing_cursors", {
  name: text("name").primaryKey(),
  at: ts("at").notNull(),
});

/** Plans; rows override the built-in defaults of @tessera/billing (`organisations.plan` names one). */
export const plans = pgTable("plans", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  /** `PlanLimits`: null fields mean unlimited. */
  limits: jsonb("limits").$type<Record<string, number | null>>().notNull(),
  /** USD per unit per metered quantity (`PlanPrices`). */
  prices: jsonb("prices").$type<Record<string, number>>().notNull(),
  createdAt: createdAt(),
});

export type BillingStatus =
  | "none"
  | "active"
  | "trialing"
  | "past_due"
  | "unpaid"
  | "canceled"
  | "incomplete";

/** Stripe state of one organisation. */
export const billingAccounts = pgTable("billing_accounts", {
  orgId: uuid("org_id")
    .primaryKey()
    .references(() => organisations.id, { onDelete: "cascade" }),
  stripeCustomerId: text("stripe_customer_id").unique(),
  stripeSubscriptionId: text("stripe_subscription_id"),
  subscriptionStatus: text("subscription_status").$type<BillingStatus>().notNull().default("none"),
  /** Start of the current paid subscription: only usage from then on is reported to Stripe. */
  paidSince: ts("paid_since"),
  /** An invoice payment failed and no later one succeeded: deploys are refused, serving is limited per plan. */
  paymentFailed: boolean("payment_failed").notNull().default(false),
  paymentFailedAt: ts("payment_failed_at"),
  /** `created` of the newest Stripe event applied, of any kind (when billing last changed). */
  lastEventAt: ts("last_event_at"),
  /**
   * `created` of the newest invoice / subscription event applied (two streams, ordered apart), so
   * an older event of the same stream delivered late changes nothing.
   */
  paymentEventAt: ts("payment_event_at"),
  subscriptionEventAt: ts("subscription_event_at"),
  updatedAt: ts("updated_at").notNull().defaultNow(),
});

/**
 * Meter events sent to Stripe, one row per (org, hour, quantity, sequence). The identifier doubles
 * as the Idempotency-Key: a job that retries after Stripe accepted but before this row was written
 * sends the same key again and Stripe answers with the first result instead of counting twice.
 */
export const stripeUsageReports = pgTable(
  "stripe_usage_reports",
  {
    identifier: text("identifier").primaryKey(),
    orgId: uuid("org_id").notNull(),
    hour: ts("hour").notNull(),
    quantity: text("quantity").notNull(),
    /** Units sent in this report (a delta over the earlier reports of the same org/hour/quantity). */
    value: bigint("value", { mode: "number" }).notNull(),
    sequence: integer("sequence").notNull(),
    reportedAt: createdAt(),
  },
  (t) => [uniqueIndex("stripe_usage_reports_key_uq").on(t.orgId, t.hour, t.quantity, t.sequence)],
);

/** Stripe webhook events already applied (the event id is Stripe's idempotency key for deliveries). */
export const stripeEvents = pgTable("stripe_events", {
  id: text("id").primaryKey(),
  type: text("type").notNull(),
  orgId: uuid("org_id"),
  receivedAt: createdAt(),
});

/** Synthetic health probes per deployment. */
export const uptimeProbes = pgTable(
  "uptime_probes",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    orgId: uuid("org_id").notNull(),
    deploymentId: uuid("deployment_id")
      .notNull()
      .references(() => deployments.id, { onDelete: "cascade" }),
    ok: boolean("ok").notNull(),
    status: integer("status"),
    latencyMs: doublePrecision("latency_ms"),
    error: text("error"),
    at: ts("at").notNull(),
  },
  (t) => [index("uptime_probes_deployment_at_idx").on(t.deploymentId, t.at)],
);

/** Opened after consecutive failed probes, closed by the next successful one. */
export const uptimeIncidents = pgTable(
  "uptime_incidents",
  {
    id: id(),
    orgId: uuid("org_id").notNull(),
    deploymentId: uuid("deployment_id")
      .notNull()
      .references(() => deployments.id, { onDelete: "cascade" }),
    openedAt: ts("opened_at").notNull(),
    closedAt: ts("closed_at"),
    reason: text("reason").notNull(),
    failedProbes: integer("failed_probes").notNull(),
  },
  (t) => [
    index("uptime_incidents_org_idx").on(t.orgId, t.openedAt),
    uniqueIndex("uptime_incidents_open_uq").on(t.deploymentId).where(sql`closed_at is null`),
  ],
);
