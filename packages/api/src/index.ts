export {
  adminEmailsFromEnv,
  createSession,
  DEFAULT_SESSION_TTL_S,
  grantPlatformAdmin,
  hashPassword,
  type OAuthIdentity,
  oauthSignIn,
  type PublicUser,
  revokeSession,
  revokeUserSessions,
  type SignUpInput,
  signUp,
  signUpInput,
  validateSession,
  verifyApiKey,
  verifyCredentials,
} from "./auth.js";
export {
  type AuthInput,
  BILLING_DISABLED,
  type BillingOptions,
  bearerToken,
  type Caller,
  type Context,
  type CreateContextOptions,
  createContext,
  resolveCaller,
} from "./context.js";
export {
  apiError,
  type DescribedError,
  describeError,
  issueFieldErrors,
  toHttpError,
  validationError,
} from "./errors.js";
export { type ApiHandlerOptions, createApiHandler } from "./http.js";
export { createRestHandler, type RestHandlerOptions } from "./rest.js";
export {
  type AppRouter,
  appRouter,
  createAppCaller,
  createCaller,
  type RouterInputs,
  type RouterOutputs,
} from "./router.js";
export { billingOptionsFromEnv } from "./routers/billing.js";
export { clusterQuota, DEFAULT_CLUSTER_QUOTA } from "./routers/clusters.js";
export { adminProcedure, authedProcedure, orgProcedure, publicProcedure, ROLE_RANK } from "./trpc.js";
