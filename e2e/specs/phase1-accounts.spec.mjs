import { assert, eventually, expectHidden, expectVisible, test } from "../harness.mjs";
import { PASSWORD, signInInBrowser, signUpInBrowser } from "./helpers.mjs";

test("sign up gives a personal org; an API key is shown once, works, and stops working when revoked", async (t) => {
  const page = await t.newPage();
  const slug = await signUpInBrowser(page, t.email("keys"));
  await expectVisible(page.getByTestId("empty-deployments"));
  await t.screenshot(page, "deployments-empty");

  await page.getByRole("link", { name: "API keys" }).click();
  await expectVisible(page.getByText("No API keys yet"));
  await page.getByLabel("Key name").fill("ci key");
  await page.getByRole("button", { name: "Create key" }).click();
  const shown = page.getByTestId("new-key-value");
  await expectVisible(shown);
  const key = (await shown.textContent()).trim();
  assert(/^tsk_/.test(key), `key looks like tsk_…, got ${key}`);
  await t.screenshot(page, "api-key-created");

  // The key authenticates API calls made outside the browser.
  const who = await t.trpc("auth.whoami", { headers: { authorization: `Bearer ${key}` } });
  assert(who.result?.data?.kind === "apiKey", `the new key authenticates: ${JSON.stringify(who)}`);
  assert(who.result.data.org.slug === slug, "the key acts for the user's personal org");

  // Shown once: after "Done" and a reload, the full key is nowhere on the page.
  await page.getByRole("button", { name: "Done" }).click();
  await expectHidden(shown);
  await page.reload();
  await expectVisible(page.getByRole("cell", { name: "ci key" }));
  assert(!(await page.content()).includes(key), "the full key is not shown again");

  await page.getByRole("button", { name: "Revoke" }).click();
  await expectVisible(page.getByRole("alertdialog"));
  await page.getByRole("button", { name: "Yes, revoke" }).click();
  await expectVisible(page.getByText("revoked", { exact: true }));
  const after = await t.trpc("auth.whoami", { headers: { authorization: `Bearer ${key}` } });
  assert(
    after.result?.data?.kind === "anonymous",
    `a revoked key no longer authenticates: ${JSON.stringify(after)}`,
  );
});

test("a wrong password is refused with a clear error; the right one signs in", async (t) => {
  const email = t.email("pw");
  const created = await t.trpc("auth.signUp", { type: "mutation", input: { email, password: PASSWORD } });
  assert(created.result?.data?.user?.email === email, `signed up: ${JSON.stringify(created)}`);
  const page = await t.newPage();
  await signInInBrowser(page, email, "not the password");
  await expectVisible(page.getByRole("alert").filter({ hasText: "Wrong email or password." }));
  assert(new URL(page.url()).pathname === "/sign-in", "stays on the sign-in page");
  await t.screenshot(page, "sign-in-wrong-password");
  await signInInBrowser(page, email, PASSWORD);
  await page.waitForURL(/\/o\/[a-z0-9-]+$/);
});

test("signing out ends the session: organisation pages ask to sign in again", async (t) => {
  const page = await t.newPage();
  const slug = await signUpInBrowser(page, t.email("out"));
  await page.getByRole("link", { name: "Sign out" }).click();
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL((u) => u.pathname === "/");
  await page.goto(`/o/${slug}`);
  await page.waitForURL(/\/sign-in/);
});

test("create an org, invite a second user who accepts; members see less than admins; other orgs are 404", async (t) => {
  const owner = await t.newPage();
  const ownerPersonal = await signUpInBrowser(owner, t.email("owner"));
  await owner.getByLabel("Organisation").selectOption("__new");
  await owner.waitForURL(/\/orgs\/new$/);
  const orgName = `Acme Research ${process.pid}`;
  await owner.getByLabel("Name", { exact: true }).fill(orgName);
  await owner.getByRole("button", { name: "Create organisation" }).click();
  await owner.waitForURL(/\/o\/acme-research/);
  const teamSlug = new URL(owner.url()).pathname.split("/")[2];

  await owner.getByRole("link", { name: "Members" }).click();
  const inviteeEmail = t.email("invitee");
  await owner.getByLabel("Email").fill(inviteeEmail);
  await owner.getByRole("button", { name: "Invite" }).click();
  const link = (await owner.getByTestId("invite-link").textContent()).trim();
  await expectVisible(owner.getByRole("cell", { name: inviteeEmail }));
  await t.screenshot(owner, "members-invited");

  // The invitee, in a separate browser context, signs up from the link and accepts.
  const invitee = await t.newPage();
  await invitee.goto(link);
  await expectVisible(invitee.getByText(`You are invited to join ${orgName}`));
  await invitee.getByRole("link", { name: "Sign up" }).click();
  await invitee.getByLabel("Email").fill(inviteeEmail);
  await invitee.getByLabel("Password").fill(PASSWORD);
  await invitee.getByRole("button", { name: "Create account" }).click();
  await invitee.waitForURL(/\/invite\//);
  await invitee.getByRole("button", { name: /Accept and join/ }).click();
  await invitee.waitForURL(new RegExp(`/o/${teamSlug}$`));

  // As a member: no key creation, no invitations.
  await invitee.goto(`/o/${teamSlug}/keys`);
  await expectVisible(invitee.getByText(/Only admins and owners/));
  assert(
    (await invitee.getByRole("button", { name: "Create key" }).count()) === 0,
    "a member sees no Create key",
  );
  await invitee.goto(`/o/${teamSlug}/members`);
  await expectVisible(invitee.getByText("Admins and owners can invite people."));
  await t.screenshot(invitee, "members-as-member");

  // The owner makes them admin; now they can create keys.
  await owner.reload();
  await owner.getByLabel(`Role of ${inviteeEmail}`).selectOption("admin");
  await eventually(async () => {
    await invitee.goto(`/o/${teamSlug}/keys`);
    await expectVisible(invitee.getByRole("heading", { name: "API keys" }));
    return (await invitee.getByRole("button", { name: "Create key" }).count()) === 1;
  }, "the new admin to see Create key");

  // Tenant isolation in pages: the invitee cannot open the owner's personal organisation.
  const res = await invitee.goto(`/o/${ownerPersonal}/keys`);
  assert(res.status() === 404, `another tenant's org page is 404, got ${res.status()}`);
  await expectVisible(invitee.getByRole("heading", { name: "Not found" }));
});
