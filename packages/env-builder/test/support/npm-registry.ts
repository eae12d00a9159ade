import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";

/**
 * A minimal npm registry on 127.0.0.1 serving tarballs made with `npm pack`: what an operator's
 * private registry is to the builder (`npmArgs: --registry URL`), without the internet.
 */
export class LocalNpmRegistry {
  private readonly tarballs = new Map<string, Buffer>();
  private readonly versions = new Map<string, Record<string, unknown>>();
  private server?: Server;
  url = "";

  constructor(private readonly workDir: string) {}

  /** `npm pack` a tiny CommonJS package exporting `{ name, version }` and publish it here. */
  addPackage(name: string, version: string): void {
    const source = join(this.workDir, `${name}-${version}-src`);
    mkdirSync(source, { recursive: true });
    writeFileSync(join(source, "package.json"), JSON.stringify({ name, version, main: "index.js" }));
    writeFileSync(
      join(source, "index.js"),
      `module.exports = { name: ${JSON.stringify(name)}, version: ${JSON.stringify(version)} };\n`,
    );
    const packed = JSON.parse(
      execFileSync("npm", ["pack", "--json", "--pack-destination", this.workDir], {
        cwd: source,
        stdio: ["ignore", "pipe", "pipe"],
      }).toString(),
    ) as { filename: string }[];
    const tarball = readFileSync(join(this.workDir, packed[0]?.filename ?? ""));
    const file = `${name}-${version}.tgz`;
    this.tarballs.set(file, tarball);
    const manifest = this.versions.get(name) ?? {};
    manifest[version] = {
      name,
      version,
      main: "index.js",
      dist: {
        tarball: `${this.url}/${name}/-/${file}`,
        shasum: createHash("sha1").update(tarball).digest("hex"),
        integrity: `sha512-${createHash("sha512").update(tarball).digest("base64")}`,
      },
    };
    this.versions.set(name, manifest);
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const path = decodeURIComponent((req.url ?? "/").split("?")[0] ?? "/");
      const tarball = /^\/[^/]+\/-\/([^/]+\.tgz)$/.exec(path);
      if (tarball?.[1] && this.tarballs.has(tarball[1])) {
        res.writeHead(200, { "content-type": "application/octet-stream" }).end(this.tarballs.get(tarball[1]));
        return;
      }
      const name = path.slice(1);
      const versions = this.versions.get(name);
      if (!versions) {
        res.writeHead(404, { "content-type": "application/json" }).end('{"error":"not found"}');
        return;
      }
      const latest = Object.keys(versions).sort().at(-1);
      res
        .writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ name, "dist-tags": { latest }, versions }));
    });
    await new Promise<void>((ready) => this.server?.listen(0, "127.0.0.1", ready));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    await new Promise((done) => this.server?.close(done));
  }
}
