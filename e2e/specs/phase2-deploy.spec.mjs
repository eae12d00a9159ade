import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { assert, eventually, expectVisible, test } from "../harness.mjs";
import { signUpInBrowser } from "./helpers.mjs";

const EXAMPLE = readFileSync(join(import.meta.dirname, "../../examples/ts-dataframe/handler.ts"), "utf8");

/** The error text shown for a field, found through the input's aria-describedby. */
async function fieldError(page, label) {
  const input = page.getByLabel(label, { exact: true });
  await eventually(
    async () => (await input.getAttribute("aria-invalid")) === "true",
    `${label} to be marked invalid`,
  );
  const ids = (await input.getAttribute("aria-describedby")).split(" ").filter((id) => id.endsWith("-error"));
  return (await page.locator(`[id="${ids[0]}"]`).textContent()).trim();
}

async function fillDeployForm(page, { entry, cpus }) {
  await page.getByLabel("Runtime").selectOption("node");
  await page.getByLabel("Application").fill("demo");
  await page.getByLabel("Deployment name").fill("dataframe");
  await page.getByLabel("Entry").fill(entry);
  await page.getByLabel("Source").fill(EXAMPLE);
  await page.getByLabel("CPUs per replica").fill(String(cpus));
}

test("deploy from the console: field errors, progress, try it, traffic in the charts, scaling, diff and rollback", async (t) => {
  const page = await t.newPage();
  const slug = await signUpInBrowser(page, t.email("deployer"));
  const nav = (name) =>
    page.getByRole("navigation", { name: "Console" }).getByRole("link", { name, exact: true });

  await nav("API keys").click();
  await page.getByLabel("Key name").fill("deploy test");
  await page.getByRole("button", { name: "Create key" }).click();
  const key = (await page.getByTestId("new-key-value").textContent()).trim();

  await nav("Deploy").click();
  await page.getByRole("button", { name: "Create cluster “main”" }).click();
  await expectVisible(page.getByLabel("Cluster"));
  await t.screenshot(page, "deploy-form");

  // Invalid config: errors appear next to the fields they are about.
  await fillDeployForm(page, { entry: "not an entry", cpus: 1000 });
  await page.getByRole("button", { name: "Deploy", exact: true }).click();
  assert((await fieldError(page, "Entry")).includes("module:Class"), "entry error names the expected form");
  assert((await fieldError(page, "CPUs per replica")).length > 0, "cpus error shown");
  await t.screenshot(page, "deploy-form-errors");

  // Fixed: the deploy goes through and the rollout page shows its progress.
  await page.getByLabel("Entry").fill("handler.ts:Dataframe");
  await page.getByLabel("CPUs per replica").fill("0.5");
  await page.getByRole("button", { name: "Deploy", exact: true }).click();
  await page.waitForURL(/\/deployments\/[0-9a-f-]+\?job=/);
  const deploymentId = new URL(page.url()).pathname.split("/").pop();
  const progress = page.getByTestId("deploy-progress");
  await expectVisible(progress.getByText("Revision v1"));
  await expectVisible(page.getByTestId("endpoint-url").getByText(`/v1/${slug}/demo/`));
  const body = {
    rows: [
      { a: 1, b: 2 },
      { a: 1, b: 3 },
    ],
    columns: ["a"],
  };

  if (t.platformServes) {
    // The whole platform: the replica comes up and answers through the gateway.
    await expectVisible(page.getByRole("heading", { level: 1 }).getByText("ready", { exact: true }), 240_000);
    await t.screenshot(page, "deployment-ready");
    await page.getByLabel("API key").fill(key);
    await page.getByLabel("Route").fill("deduplicate");
    await page.getByLabel("JSON body").fill(JSON.stringify(body));
    await page.getByRole("button", { name: "Send request" }).click();
    await expectVisible(page.getByTestId("try-result").getByText("HTTP 200"), 60_000);
    const answered = JSON.parse(await page.getByTestId("try-body").textContent());
    assert(
      answered.removed === 1 && answered.rows.length === 1,
      `try it answers: ${JSON.stringify(answered)}`,
    );
    await t.screenshot(page, "deployment-try-it");
    const res = await fetch(`${t.gatewayUrl}/v1/${slug}/demo/deduplicate`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const direct = await res.json();
    assert(
      res.status === 200 && direct.removed === 1,
      `direct call: ${res.status} ${JSON.stringify(direct)}`,
    );
    // The replica's request log lines arrive in the Logs tab; a higher minimum level hides them.
    await page.getByRole("tab", { name: "Logs" }).click();
    await expectVisible(
      page
        .getByRole("log", { name: "Replica logs" })
        .getByText(/INFO\s+request/)
        .first(),
      60_000,
    );
    await page.getByLabel("Minimum level").selectOption("error");
    await expectVisible(page.getByText("No log lines match."));
    await t.screenshot(page, "deployment-logs-filtered");
    await page.getByRole("tab", { name: "Metrics" }).click();
  } else if (t.provisionerRunning) {
    // A provisioner without a driver for local clusters: it takes the job, and the page says
    // what the provisioner reports rather than pretending progress.
    await expectVisible(progress.getByText(/Provisioner job/), 60_000);
    await eventually(
      async () => !(await progress.textContent()).includes("waiting for the provisioner"),
      "the job to be picked up",
      60_000,
    );
  } else {
    // No provisioner: the honest state is a queued job that nothing has picked up.
    await expectVisible(progress.getByText("waiting for the provisioner to pick it up"));
  }
  await t.screenshot(page, "deployment-detail");

  if (!t.platformServes) {
    // "Try it" reports what came back from the gateway, whatever it is.
    await page.getByLabel("API key").fill(key);
    await page.getByLabel("Route").fill("deduplicate");
    await page.getByRole("button", { name: "Send request" }).click();
    await expectVisible(page.getByTestId("try-result"));
    // Without a serving platform the test records the usage events a gateway would write for
    // three calls (one failed), so the charts have something to count.
    const [{ org_id: orgId }] = (await t.sql("select org_id from deployments where id = $1", [deploymentId]))
      .rows;
    for (const [status, latency] of [
      [200, 12],
      [200, 18],
      [502, 40],
    ])
      await t.sql(
        "insert into usage_events (id, org_id, deployment_id, kind, quantity, status, latency_ms, at) values ($1, $2, $3, 'request', 1, $4, $5, now())",
        [randomUUID(), orgId, deploymentId, status, latency],
      );
  }
  // The requests are counted in the charts (the gateway flushes usage every second).
  const total = await eventually(
    async () => {
      // Both requests (try it + the direct call), or the three recorded ones: each usage event
      // reaches the chart only after the gateway's next flush and the page's next poll.
      const text = await page.getByTestId("request-total").textContent();
      const counted = Number(/(\d+) requests/.exec(text)?.[1] ?? 0);
      return counted >= (t.platformServes ? 2 : 3) && text;
    },
    "requests to be counted",
    60_000,
  );
  assert(
    t.platformServes ? Number(/(\d+) requests/.exec(total)[1]) >= 2 : /3 requests, 1 errors/.test(total),
    `counted in the charts: ${total}`,
  );
  await expectVisible(page.getByRole("figure", { name: "Latency" }));
  await t.screenshot(page, "deployment-metrics");
  await page.getByRole("tab", { name: "Uptime" }).click();
  await expectVisible(page.getByRole("figure", { name: "Availability per period" }));

  // Autoscaling knobs without a redeploy: a bad range is a field error, a good one a scaling event.
  await page.getByRole("tab", { name: "Settings" }).click();
  await page.getByLabel("Autoscaling").check();
  await page.getByLabel("Min replicas").fill("5");
  await page.getByLabel("Max replicas").fill("3");
  await page.getByRole("button", { name: "Save scaling" }).click();
  assert(
    (await fieldError(page, "Max replicas")).includes("maxReplicas must be >= minReplicas"),
    "range error",
  );
  await page.getByLabel("Min replicas").fill("2");
  await page.getByRole("button", { name: "Save scaling" }).click();
  await expectVisible(page.getByText("Saved: target 2 replicas"));
  await page.getByRole("tab", { name: "Scaling events" }).click();
  await expectVisible(page.getByRole("cell", { name: "1 → 2" }));

  // A second revision from the deploy form, then diff and rollback.
  await nav("Deploy").click();
  await fillDeployForm(page, { entry: "handler.ts:Dataframe", cpus: 1 });
  await page.getByRole("button", { name: "Deploy", exact: true }).click();
  await page.waitForURL(new RegExp(`/deployments/${deploymentId}\\?job=`));
  await expectVisible(page.getByTestId("deploy-progress").getByText("Revision v2"));
  await page.getByRole("tab", { name: "Revisions" }).click();
  await page.getByRole("button", { name: "Diff with v2" }).click();
  await expectVisible(page.getByRole("table", { name: "Config differences" }).getByText("resources.cpus"));
  await t.screenshot(page, "revisions-diff");
  await page.getByRole("button", { name: "Roll back to v1" }).click();
  await page.getByRole("button", { name: "Roll back", exact: true }).click();
  await expectVisible(page.getByTestId("deploy-progress").getByText("Revision v3"));

  // Delete it, so no replica outlives the test.
  await page.getByRole("tab", { name: "Settings" }).click();
  await page.getByRole("button", { name: "Delete…" }).click();
  await page.getByRole("button", { name: "Yes, delete" }).click();
  await page.waitForURL(new RegExp(`/o/${slug}$`));
  if (t.platformServes)
    await eventually(
      async () =>
        (
          await t.sql(
            "select count(*)::int as n from replicas where deployment_id = $1 and state in ('starting', 'ready', 'draining')",
            [deploymentId],
          )
        ).rows[0].n === 0,
      "the deleted deployment's replicas to stop",
      120_000,
    );
});

test("tenant isolation in pages, and the admin area is 404 for everyone but platform admins", async (t) => {
  const a = await t.newPage();
  const aSlug = await signUpInBrowser(a, t.email("tenant-a"));
  const b = await t.newPage();
  await signUpInBrowser(b, t.email("tenant-b"));
  for (const path of [`/o/${aSlug}`, `/o/${aSlug}/deploy`, `/o/${aSlug}/keys`, `/o/${aSlug}/clusters`]) {
    const res = await b.goto(path);
    assert(res.status() === 404, `${path} is 404 for another tenant, got ${res.status()}`);
  }
  const adminRes = await b.goto("/admin");
  assert(adminRes.status() === 404, `/admin is 404 for a normal user, got ${adminRes.status()}`);
  await expectVisible(b.getByRole("heading", { name: "Not found" }));

  const admin = await t.newPage();
  await signUpInBrowser(admin, t.adminEmail);
  await admin.goto("/admin");
  await expectVisible(admin.getByRole("heading", { name: "Platform admin" }));
  await expectVisible(admin.getByRole("region", { name: "Queues" }).getByText("control"));
  await admin.getByLabel("Search organisations, clusters and deployments").fill(aSlug);
  await expectVisible(
    admin.getByRole("table", { name: "All organisations" }).getByRole("cell", { name: aSlug, exact: true }),
  );
  await t.screenshot(admin, "admin");
});

test("key pages fit a phone screen", async (t) => {
  const page = await t.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const slug = await signUpInBrowser(page, t.email("phone"));
  for (const [path, name] of [
    ["", "deployments"],
    ["/deploy", "deploy"],
    ["/clusters", "clusters"],
    ["/keys", "keys"],
    ["/members", "members"],
    ["/billing", "billing"],
  ]) {
    await page.goto(`/o/${slug}${path}`);
    await expectVisible(page.getByRole("heading", { level: 1 }));
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 1, `${name} has no horizontal page scroll at 390px (overflow ${overflow}px)`);
    await t.screenshot(page, `phone-${name}`);
  }
});
