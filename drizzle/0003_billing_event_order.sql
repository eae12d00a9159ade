ALTER TABLE "billing_accounts" ADD COLUMN "payment_event_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "billing_accounts" ADD COLUMN "subscription_event_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "usage_events_at_idx" ON "usage_events" USING btree ("at");