CREATE TABLE "billing_accounts" (
	"org_id" uuid PRIMARY KEY NOT NULL,
	"stripe_customer_id" text,
	"stripe_subscription_id" text,
	"subscription_status" text DEFAULT 'none' NOT NULL,
	"paid_since" timestamp with time zone,
	"payment_failed" boolean DEFAULT false NOT NULL,
	"payment_failed_at" timestamp with time zone,
	"last_event_at" timestamp with time zone,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "billing_accounts_stripe_customer_id_unique" UNIQUE("stripe_customer_id")
);
--> statement-breakpoint
CREATE TABLE "billing_cursors" (
	"name" text PRIMARY KEY NOT NULL,
	"at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "plans" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"limits" jsonb NOT NULL,
	"prices" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "stripe_events" (
	"id" text PRIMARY KEY NOT NULL,
	"type" text NOT NULL,
	"org_id" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "stripe_usage_reports" (
	"identifier" text PRIMARY KEY NOT NULL,
	"org_id" uuid NOT NULL,
	"hour" timestamp with time zone NOT NULL,
	"quantity" text NOT NULL,
	"value" bigint NOT NULL,
	"sequence" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "uptime_incidents" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"org_id" uuid NOT NULL,
	"deployment_id" uuid NOT NULL,
	"opened_at" timestamp with time zone NOT NULL,
	"closed_at" timestamp with time zone,
	"reason" text NOT NULL,
	"failed_probes" integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE "uptime_probes" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"org_id" uuid NOT NULL,
	"deployment_id" uuid NOT NULL,
	"ok" boolean NOT NULL,
	"status" integer,
	"latency_ms" double precision,
	"error" text,
	"at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "usage_hourly" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"org_id" uuid NOT NULL,
	"deployment_id" uuid,
	"hour" timestamp with time zone NOT NULL,
	"requests" bigint DEFAULT 0 NOT NULL,
	"errors" bigint DEFAULT 0 NOT NULL,
	"latency_histogram" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"latency_sum_ms" double precision DEFAULT 0 NOT NULL,
	"replica_seconds" double precision DEFAULT 0 NOT NULL,
	"cpu_seconds" double precision DEFAULT 0 NOT NULL,
	"gpu_seconds" double precision DEFAULT 0 NOT NULL,
	"memory_gib_seconds" double precision DEFAULT 0 NOT NULL,
	"build_seconds" double precision DEFAULT 0 NOT NULL,
	"egress_bytes" bigint DEFAULT 0 NOT NULL,
	"computed_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "usage_events" ADD COLUMN "recorded_at" timestamp with time zone DEFAULT now() NOT NULL;--> statement-breakpoint
ALTER TABLE "billing_accounts" ADD CONSTRAINT "billing_accounts_org_id_organisations_id_fk" FOREIGN KEY ("org_id") REFERENCES "public"."organisations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "uptime_incidents" ADD CONSTRAINT "uptime_incidents_deployment_id_deployments_id_fk" FOREIGN KEY ("deployment_id") REFERENCES "public"."deployments"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "uptime_probes" ADD CONSTRAINT "uptime_probes_deployment_id_deployments_id_fk" FOREIGN KEY ("deployment_id") REFERENCES "public"."deployments"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "stripe_usage_reports_key_uq" ON "stripe_usage_reports" USING btree ("org_id","hour","quantity","sequence");--> statement-breakpoint
CREATE INDEX "uptime_incidents_org_idx" ON "uptime_incidents" USING btree ("org_id","opened_at");--> statement-breakpoint
CREATE UNIQUE INDEX "uptime_incidents_open_uq" ON "uptime_incidents" USING btree ("deployment_id") WHERE closed_at is null;--> statement-breakpoint
CREATE INDEX "uptime_probes_deployment_at_idx" ON "uptime_probes" USING btree ("deployment_id","at");--> statement-breakpoint
CREATE INDEX "usage_hourly_org_hour_idx" ON "usage_hourly" USING btree ("org_id","hour");--> statement-breakpoint
CREATE INDEX "usage_hourly_deployment_hour_idx" ON "usage_hourly" USING btree ("deployment_id","hour");--> statement-breakpoint
CREATE INDEX "usage_hourly_hour_idx" ON "usage_hourly" USING btree ("hour");--> statement-breakpoint
CREATE INDEX "usage_events_recorded_at_idx" ON "usage_events" USING btree ("recorded_at");