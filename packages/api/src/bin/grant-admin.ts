/**
 * Make an existing user a platform admin:
 *   DATABASE_URL=postgres://... pnpm exec tsx packages/api/src/bin/grant-admin.ts someone@example.com
 */
import { connect } from "@tessera/db";
import { grantPlatformAdmin } from "../auth.js";
import { describeError } from "../errors.js";

const email = process.argv[2];
if (!email) {
  console.error("usage: grant-admin <email>");
  process.exit(2);
}
const handle = connect();
try {
  const user = await grantPlatformAdmin(handle.db, email);
  console.log(`${user.email} is now a platform admin`);
} catch (err) {
  const d = describeError(err);
  console.error(`${d.code}: ${d.code === "INTERNAL" && err instanceof Error ? err.message : d.message}`);
  process.exitCode = 1;
} finally {
  await handle.close();
}
