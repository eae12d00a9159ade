import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { organisations, users } from "../src/index.js";
import { createTestDatabase, type TestDatabase } from "../src/testing.js";

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase("db");
});
afterAll(async () => {
  await t?.drop();
});

describe("schema", () => {
  it("applies migrations and enforces unique emails and slugs", async () => {
    await t.db.insert(users).values({ email: "a@example.com" });
    await expect(t.db.insert(users).values({ email: "a@example.com" })).rejects.toThrow();
    await t.db.insert(organisations).values({ slug: "acme", name: "Acme" });
    await expect(t.db.insert(organisations).values({ slug: "acme", name: "Other" })).rejects.toThrow();
    const [org] = await t.db.select().from(organisations).where(eq(organisations.slug, "acme"));
    expect(org?.plan).toBe("free");
  });
});
