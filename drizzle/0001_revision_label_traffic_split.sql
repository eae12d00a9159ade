ALTER TABLE "deployments" ADD COLUMN "traffic" jsonb;--> statement-breakpoint
ALTER TABLE "revisions" ADD COLUMN "label" text;