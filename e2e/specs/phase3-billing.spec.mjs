import { assert, expectVisible, test } from "../harness.mjs";
import { signInInBrowser, signUpInBrowser } from "./helpers.mjs";

/**
 * One metered hour for an organisation, written as the hourly rollup writes it (org-level, no
 * deployment). Its hour is in this month and at least 23 hours old, so no rollup of this run's own
 * hours (which deletes and rewrites whole hours) touches it.
 */
async function seedMeteredHour(t, orgId, { requests, buildSeconds }) {
  await t.sql(
    `insert into usage_hourly (org_id, hour, requests, build_seconds)
     values ($1, greatest(date_trunc('month', now() at time zone 'UTC') at time zone 'UTC',
                          date_trunc('hour', now()) - interval '23 hours'), $2, $3)`,
    [orgId, requests, buildSeconds],
  );
}

async function orgIdOf(t, slug, plan) {
  const { rows } = await t.sql("update organisations set plan = $2 where slug = $1 returning id", [
    slug,
    plan,
  ]);
  return rows[0].id;
}

test("billing UI: billing page says not configured without Stripe and prices this month's usage", async (t) => {
  const page = await t.newPage();
  const slug = await signUpInBrowser(page, t.email("billing"));
  await seedMeteredHour(t, await orgIdOf(t, slug, "payg"), { requests: 1_000_000, buildSeconds: 3600 });

  await page.getByRole("link", { name: "Usage & billing" }).click();
  await expectVisible(page.getByRole("heading", { name: "Plan: Pay as you go" }));
  await expectVisible(page.getByText(/Billing is not configured on this platform/));
  await expectVisible(
    page.getByRole("table", { name: "Plan limits" }).getByRole("cell", { name: "Requests per minute" }),
  );
  // Pay-as-you-go prices: 1M requests at $0.000002 + 3600 build seconds at $0.0001 = $2.36.
  await expectVisible(page.getByTestId("period-cost").getByText("$2.36"));
  const byDeployment = page.getByRole("table", { name: "Cost by deployment" });
  await expectVisible(byDeployment.getByRole("cell", { name: "(builds)" }));
  await expectVisible(byDeployment.getByRole("cell", { name: "$2.36" }));
  await expectVisible(page.getByRole("figure", { name: "Requests per day" }));
  await expectVisible(page.getByRole("figure", { name: "Cost per day" }));
  await t.screenshot(page, "billing");

  await page.getByRole("link", { name: "Uptime" }).click();
  await expectVisible(page.getByRole("heading", { name: "Uptime and SLOs" }));
  await expectVisible(page.getByText("No deployments yet."));
});

test("billing UI: admin monitoring shows queue depths and traffic per org; 404 for a normal user", async (t) => {
  const user = await t.newPage();
  const slug = await signUpInBrowser(user, t.email("monitored"));
  await seedMeteredHour(t, await orgIdOf(t, slug, "free"), { requests: 3600, buildSeconds: 0 });
  const res = await user.goto("/admin");
  assert(res.status() === 404, `/admin is 404 for a normal user, got ${res.status()}`);

  const admin = await t.newPage();
  // Another spec may have signed the admin up already in this run.
  const { rowCount } = await t.sql("select 1 from users where email = $1", [t.adminEmail]);
  if (rowCount) {
    await signInInBrowser(admin, t.adminEmail);
    await admin.waitForURL(/\/o\/[a-z0-9-]+$/);
  } else await signUpInBrowser(admin, t.adminEmail);
  await admin.goto("/admin");
  const queues = admin.getByRole("region", { name: "Queues" });
  await expectVisible(queues.getByText("control"));
  await expectVisible(queues.getByText("billing"));
  const traffic = admin.getByRole("table", { name: "Traffic per organisation" });
  const row = traffic.getByRole("row").filter({ has: admin.getByRole("cell", { name: slug, exact: true }) });
  await expectVisible(row.getByRole("cell", { name: "3,600", exact: true }));
  await expectVisible(admin.getByRole("heading", { name: "Environment build failures" }));
  await t.screenshot(admin, "admin-monitoring");
});
