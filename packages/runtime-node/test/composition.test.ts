import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll } from "vitest";
import { compositionEnv, compositionSuite } from "../../runtime-python/test/support/composition-suite.js";
import { buildNodeBundle, type NodeBundle, nodeReplicaCommand } from "../src/index.js";

const work = mkdtempSync(join(tmpdir(), "tessera-node-composition-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const bundles = new Map<string, Promise<NodeBundle>>();

compositionSuite({
  name: "node",
  launch: async (cls, opts) => {
    if (!bundles.has(cls))
      bundles.set(
        cls,
        buildNodeBundle({
          codeDir: join(import.meta.dirname, "fixtures"),
          entry: `composition.ts:${cls}`,
          outDir: join(work, cls),
        }),
      );
    const bundle = await bundles.get(cls)!;
    return nodeReplicaCommand({ bundle, env: compositionEnv(cls, bundle.dir, bundle.entry, opts) });
  },
});
