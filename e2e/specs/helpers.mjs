import { expectVisible } from "../harness.mjs";

export const PASSWORD = "correct horse battery staple";

/** Sign up through the console's form; resolves on the new user's organisation page. */
export async function signUpInBrowser(page, email, password = PASSWORD) {
  await page.goto("/sign-up");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.waitForURL(/\/o\/[a-z0-9-]+$/, { timeout: 30_000 });
  await expectVisible(page.getByRole("heading", { name: "Deployments" }));
  return new URL(page.url()).pathname.split("/")[2];
}

export async function signInInBrowser(page, email, password = PASSWORD) {
  await page.goto("/sign-in");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}
