import type { inferRouterInputs, inferRouterOutputs } from "@trpc/server";
import { type CreateContextOptions, createContext } from "./context.js";
import { adminRouter } from "./routers/admin.js";
import { apiKeysRouter } from "./routers/apiKeys.js";
import { applicationsRouter } from "./routers/applications.js";
import { authRouter } from "./routers/auth.js";
import { clustersRouter } from "./routers/clusters.js";
import { deploymentsRouter } from "./routers/deployments.js";
import { invitationsRouter } from "./routers/invitations.js";
import { environmentsRouter, jobsRouter } from "./routers/jobs.js";
import { membersRouter } from "./routers/members.js";
import { metricsRouter } from "./routers/metrics.js";
import { orgsRouter } from "./routers/orgs.js";
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
  jobs: jobsRouter,
  environments: environmentsRouter,
  admin: adminRouter,
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
