import type { inferRouterInputs, inferRouterOutputs } from "@trpc/server";
import { type CreateContextOptions, createContext } from "./context.js";
import { adminRouter } from "./routers/admin.js";
import { apiKeysRouter } from "./routers/apiKeys.js";
import { applicationsRouter } from "./routers/applications.js";
import { authRouter } from "./routers/auth.js";
import { billingRouter } from "./routers/billing.js";
import { clustersRouter } from "./routers/clusters.js";
import { deploymentsRouter } from "./routers/deployments.js";
import { invitationsRouter } from "./routers/invitations.js";
import { environmentsRouter, jobsRouter } from "./routers/jobs.js";
import { membersRouter } from "./routers/members.js";
import { metricsRouter } from "./routers/metrics.js";
import { orgsRouter } from "./routers/orgs.js";
import { rayServeRouter } from "./routers/rayServe.js";
import { sloRouter } from "./routers/slo.js";
import { trafficRouter } from "./routers/traffic.js";
import { usageRouter } from "./routers/usage.js";
import { createCallerFactory, router } from "./trpc.js";

export const appRouter = router({
  auth: authRouter,
  orgs: orgsRouter,
  members: membersRouter,
  invitations: invitationsRouter,
  apiKeys: apiKeysRouter,
  clusters: clustersRouter,
  applications: applicationsRouter,
  deployments: deploymentsRouter,
  rayServe: rayServeRouter,
  traffic: trafficRouter,
  jobs: jobsRouter,
  environments: environmentsRouter,
  admin: adminRouter,
  billing: billingRouter,
  usage: usageRouter,
  slo: sloRouter,
  metrics: metricsRouter,
});

export type AppRouter = typeof appRouter;
export type RouterInputs = inferRouterInputs<AppRouter>;
export type RouterOutputs = inferRouterOutputs<AppRouter>;

/** Server-side caller (RSC, scripts, tests): `const api = await createCaller({db, jobs, auth}); await api.orgs.list()`. */
export const createAppCaller = createCallerFactory(appRouter);

export async function createCaller(opts: CreateContextOptions) {
  return createAppCaller(await createContext(opts));
}
