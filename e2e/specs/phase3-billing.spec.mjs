import { assert, expectVisible, test } from "../harness.mjs";
import { PASSWORD, signInInBrowser, signUpInBrowser } from "./helpers.mjs";

test("billing UI: billing page not configured without Stripe, this month's usage priced per deployment", async (t) => {
  const page = await t.newPage();
  const slug = await signUpInBrowser(page, t.email("billing"));
  const {
    rows: [org],
  } = await t.sql("update organisations set plan = 'payg' where slug = $1 returning id", [slug]);
  // One metered hour, as the hourly rollup writes it: org-level (no deployment), at the start of the
  // month so it is in the current period and no rollup of this run's own hours recomputes it.
  await t.sql(
    `insert into usage_hourly (org_id, hour, requests, build_seconds)
     values ($1, date_trunc('month', now() at time zone 'UTC') at time zone 'UTC', 1000000, 3600)`,
    [org.id],
  );

  await page.goto(`/o/${slug}/billing`);
  await expectVisible(page.getByRole("heading", { name: "Billing" }));
  await expectVisible(page.getByText("not configured", { exact: true }));
  await expectVisible(page.getByRole("heading", { name: "Plan: Pay as you go" }));
  // Pay-as-you-go prices: 1M requests at $0.000002 + 3600 build seconds at $0.0001.
  const byDeployment = page.getByRole("table", { name: "Cost by deployment" });
  await expectVisible(byDeployment.getByRole("cell", { name: "builds (org)" }));
  await expectVisible(byDeployment.getByRole("cell", { name: "$2.36" }));
  await expectVisible(page.getByText("running cost $2.36 so far"));
  await expectVisible(page.getByRole("figure", { name: "Requests per day" }));
  await expectVisible(page.getByText("No invoices: billing is not configured on this platform."));
  await t.screenshot(page, "billing");

  await page.goto(`/o/${slug}/uptime`);
  await expectVisible(page.getByRole("heading", { name: "Uptime and SLOs" }));
  await expectVisible(page.getByText("No deployments yet."));
});

test("billing UI: admin monitoring queue depths for a platform admin, 404 for everyone else", async (t) => {
  const user = await t.newPage();
  await signUpInBrowser(user, t.email("not-admin"));
  const res = await user.goto("/admin/monitoring");
  assert(res.status() === 404, `/admin/monitoring is 404 for a normal user, got ${res.status()}`);

  const admin = await t.newPage();
  // Another spec may have signed the admin up already in this run.
  const { rowCount } = await t.sql("select 1 from users where email = $1", [t.adminEmail]);
  if (rowCount) {
    await signInInBrowser(admin, t.adminEmail, PASSWORD);
    await admin.waitForURL(/\/o\/[a-z0-9-]+$/);
  } else await signUpInBrowser(admin, t.adminEmail);
  await admin.goto("/admin/monitoring");
  await expectVisible(admin.getByRole("heading", { name: "Platform monitoring" }));
  const queues = admin.getByRole("table", { name: "Queue depths" });
  await expectVisible(queues.getByRole("cell", { name: "control", exact: true }));
  await expectVisible(queues.getByRole("cell", { name: "billing", exact: true }));
  await expectVisible(
    admin.getByRole("table", { name: "Replicas by state" }).or(admin.getByText("No replicas running.")),
  );
  await t.screenshot(admin, "admin-monitoring");
});
