import { invalidSpec } from "./errors.js";

/**
 * Local specs (`file:`, `link:`, paths) would install whatever is at that path on the cluster,
 * another tenant's code included; the operator makes local packages available through a
 * registry (`npmArgs: --registry ...`) instead. Versions, ranges, tags, aliases, git and https
 * tarball URLs are allowed.
 */
// `~/x` is a home-relative path; `~1.2.3` is a tilde range and fine.
const LOCAL_SPEC = /^(file:|link:|portal:|workspace:|patch:|exec:|[./\\]|~[/\\]|-)/i;

export function checkNpmDependency(name: string, spec: string): void {
  if (LOCAL_SPEC.test(spec.trim()))
    throw invalidSpec(`npm dependency '${name}': '${spec}' is not allowed (no local paths or options)`);
}

/** The `package.json` an npm environment is installed from. */
export function environmentPackageJson(hash: string, dependencies: Record<string, string>): string {
  return `${JSON.stringify({ name: `tessera-env-${hash}`, version: "0.0.0", private: true, dependencies }, null, 2)}\n`;
}
