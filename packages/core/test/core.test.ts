import { describe, expect, it } from "vitest";
import {
  apiKeyMatches,
  deploymentConfig,
  environmentHash,
  fieldErrors,
  generateApiKey,
  parseApiKey,
} from "../src/index.js";

describe("environment hashing", () => {
  it("ignores order and whitespace of requirements", () => {
    const a = environmentHash("python", { kind: "pip", requirements: ["numpy==1.20.2", " pandas "] });
    const b = environmentHash("python", { kind: "pip", requirements: ["pandas", "numpy==1.20.2"] });
    expect(a).toBe(b);
  });
  it("distinguishes versions and runtimes", () => {
    const a = environmentHash("python", { kind: "pip", requirements: ["numpy==1.20.2"] });
    expect(environmentHash("python", { kind: "pip", requirements: ["numpy==1.21.0"] })).not.toBe(a);
    expect(environmentHash("node", { kind: "none" })).not.toBe(environmentHash("python", { kind: "none" }));
  });
  it("normalises the nested pip list of a conda spec", () => {
    const a = environmentHash("python", {
      kind: "conda",
      channels: ["conda-forge"],
      dependencies: ["python=3.11", { pip: ["b", "a"] }],
    });
    const b = environmentHash("python", {
      kind: "conda",
      channels: ["conda-forge"],
      dependencies: [{ pip: ["a", "b"] }, "python=3.11"],
    });
    expect(a).toBe(b);
  });
});

describe("deployment config", () => {
  it("fills defaults", () => {
    const c = deploymentConfig.parse({ runtime: "python", entry: "handler:Dataframe" });
    expect(c.maxOngoingRequests).toBe(8);
    expect(c.environment).toEqual({ kind: "none" });
    expect(c.resources).toEqual({ cpus: 1, gpus: 0, memoryMb: 512 });
  });
  it("reports field paths", () => {
    const r = deploymentConfig.safeParse({
      runtime: "python",
      entry: "handler:Dataframe",
      autoscaling: { minReplicas: 3, maxReplicas: 1 },
    });
    expect(r.success).toBe(false);
    expect(fieldErrors(r.error!)).toHaveProperty("autoscaling.maxReplicas");
  });
});

describe("api keys", () => {
  it("round-trips and rejects tampering", () => {
    const { key, prefix, hash } = generateApiKey();
    expect(parseApiKey(key)?.prefix).toBe(prefix);
    expect(apiKeyMatches(key, hash)).toBe(true);
    // Change the last character (to another one: a key may end in "x" by chance).
    const tampered = `${key.slice(0, -1)}${key.endsWith("x") ? "y" : "x"}`;
    expect(apiKeyMatches(tampered, hash)).toBe(false);
    expect(parseApiKey("tsk_short")).toBeNull();
  });
});

describe("handle tokens", () => {
  const org = "11111111-1111-4111-8111-111111111111";
  const app = "22222222-2222-4222-8222-222222222222";
  it("verify what was minted with the same secret only", async () => {
    const { mintHandleToken, verifyHandleToken } = await import("../src/handle-tokens.js");
    const token = mintHandleToken("s3cret", org, app);
    expect(verifyHandleToken("s3cret", token)).toEqual({ orgId: org, applicationId: app });
    expect(verifyHandleToken("other", token)).toBeNull();
    const forged = token.replace(org, "33333333-3333-4333-8333-333333333333");
    expect(verifyHandleToken("s3cret", forged)).toBeNull();
    expect(verifyHandleToken("s3cret", "th_garbage")).toBeNull();
    expect(verifyHandleToken("", token)).toBeNull();
  });
  it("replicaHandleEnv gives a replica the handle URL and a token scoped to its org and application", async () => {
    const { replicaHandleEnv, verifyHandleToken } = await import("../src/handle-tokens.js");
    const env = replicaHandleEnv({
      gatewayUrl: "http://127.0.0.1:8080/",
      secret: "s3cret",
      orgId: org,
      orgSlug: "acme",
      applicationId: app,
      appName: "shop",
    });
    expect(Object.keys(env).sort()).toEqual(["TESSERA_HANDLE_TOKEN", "TESSERA_HANDLE_URL"]);
    expect(env.TESSERA_HANDLE_URL).toBe("http://127.0.0.1:8080/-/handles/acme/shop");
    expect(verifyHandleToken("s3cret", env.TESSERA_HANDLE_TOKEN!)).toEqual({
      orgId: org,
      applicationId: app,
    });
    expect(JSON.stringify(env)).not.toContain("s3cret");
  });
});

describe("probe tokens", () => {
  it("verify under their own secret only, and are never handle tokens (nor the reverse)", async () => {
    const { mintProbeToken, verifyProbeToken, probeIngressUrl } = await import("../src/probe-tokens.js");
    const { mintHandleToken, verifyHandleToken } = await import("../src/handle-tokens.js");
    const token = mintProbeToken("s3cret");
    expect(verifyProbeToken("s3cret", token)).toBe(true);
    expect(verifyProbeToken("other", token)).toBe(false);
    expect(verifyProbeToken("", token)).toBe(false);
    expect(verifyProbeToken("s3cret", `${token.slice(0, -1)}${token.endsWith("A") ? "B" : "A"}`)).toBe(false);
    const id = "00000000-0000-4000-8000-000000000001";
    const handle = mintHandleToken("s3cret", id, id);
    expect(verifyProbeToken("s3cret", handle)).toBe(false);
    expect(verifyHandleToken("s3cret", token)).toBeNull();
    expect(() => mintProbeToken("")).toThrow();
    expect(probeIngressUrl("http://gw:8080/", "acme", "shop", "a b")).toBe(
      "http://gw:8080/-/probe/acme/shop/a%20b",
    );
  });
});
